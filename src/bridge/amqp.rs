//! AMQP.
