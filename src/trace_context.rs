//! W3C Trace Context: [`TraceContext`], the `traceparent` header that carries a trace across
//! the bus (and across a bridge, which copies headers).
//!
//! A producer puts the context of the work that sends into the record
//! ([`Record::trace_context`](crate::Record::trace_context)); a consumer reads it back
//! ([`Message::trace_context`](crate::Message::trace_context)) and continues the same trace.
//! See [`TraceContext`] for the format and an example.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The header that carries a [`TraceContext`]: `traceparent`, lowercase, as W3C names it.
pub const TRACEPARENT: &str = "traceparent";

/// A W3C trace context: which trace a message belongs to and which span sent it.
///
/// Parse one with [`parse`](Self::parse) (or `str::parse`), print it with `Display` (the
/// `traceparent` header's text), start a trace with [`new_root`](Self::new_root) and a span in
/// it with [`child`](Self::child).
///
/// A producer puts the context of the work that sends into the record
/// ([`Record::trace_context`](crate::Record::trace_context)); a consumer reads it back
/// ([`Message::trace_context`](crate::Message::trace_context)) and continues the same trace.
/// The header's text follows the [W3C Trace Context] recommendation,
/// `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`, so it means the same to any
/// OpenTelemetry SDK the application (or the service past a bridge) uses. These helpers need
/// no feature; the `tracing` feature adds the header's value to the `deliver` events.
///
/// `tracestate` (vendor data that travels with `traceparent`) is carried like any header:
/// [`Record::trace_context`](crate::Record::trace_context) neither reads nor changes it.
///
/// ```
/// use embus::{Broker, Record, TraceContext};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Broker::memory();
/// let orders = bus.queue::<String>("orders")?;
///
/// // The producer's work belongs to a trace that came in (here, from an HTTP request);
/// // the send is a child span of it.
/// let incoming: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// let send = incoming.child();
/// orders.producer().send_record(Record::new("espresso".to_string()).trace_context(send))?;
///
/// // The consumer continues the same trace.
/// let mut worker = orders.consumer();
/// let order = worker.recv()?;
/// let context = order.trace_context().ok_or("no traceparent")??;
/// assert_eq!(context.trace_id, incoming.trace_id);
/// assert_eq!(context, send);
/// let work = context.child(); // the consumer's own span, in the producer's trace
/// assert_ne!(work.span_id, send.span_id);
/// order.ack()?;
/// # Ok(()) }
/// ```
///
/// [W3C Trace Context]: https://www.w3.org/TR/trace-context/
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace: shared by every span of one piece of work, never all zero.
    pub trace_id: [u8; 16],
    /// The span that sent the message (W3C's `parent-id`), never all zero.
    pub span_id: [u8; 8],
    /// The trace flags: bit 0 (`0x01`) is *sampled* (the caller may have recorded the trace);
    /// other bits are kept as they came.
    pub flags: u8,
}

/// Why a `traceparent` value was refused ([`TraceContext::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentError {
    /// Version `00` must be exactly 55 characters; later versions at least 55, with a `-`
    /// after them if longer.
    #[error("traceparent has the wrong length ({0} bytes)")]
    Length(usize),
    /// The fields are not separated by single `-`.
    #[error("traceparent fields must be separated by `-`")]
    Separator,
    /// A field is not lowercase hexadecimal (uppercase is refused, as W3C says).
    #[error("traceparent {0} is not lowercase hexadecimal")]
    Hex(&'static str),
    /// Version `ff` is forbidden.
    #[error("traceparent version ff is invalid")]
    Version,
    /// The trace id is all zero.
    #[error("traceparent trace id is all zero")]
    ZeroTraceId,
    /// The parent (span) id is all zero.
    #[error("traceparent parent id is all zero")]
    ZeroSpanId,
    /// The header's value is not UTF-8 text.
    #[error("traceparent is not UTF-8 text")]
    NotText,
}

impl TraceContext {
    /// The context of a new trace: random trace and span ids (never all zero), sampled.
    ///
    /// The ids come from std's randomly keyed hasher over a process-wide counter and the time:
    /// unique enough to tell traces apart, not a secret.
    pub fn new_root() -> Self {
        let (a, b) = (random_u64(), random_u64());
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&a.to_be_bytes());
        trace_id[8..].copy_from_slice(&b.to_be_bytes());
        Self {
            trace_id,
            span_id: new_span_id(),
            flags: 0x01,
        }
    }

    /// A new span in the same trace: same trace id and flags, a new random span id.
    ///
    /// ```
    /// let root = embus::TraceContext::new_root();
    /// let child = root.child();
    /// assert_eq!(child.trace_id, root.trace_id);
    /// assert_ne!(child.span_id, root.span_id);
    /// ```
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Whether the sampled flag (`0x01`) is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// Reads a `traceparent` value, as W3C Trace Context says: version `00` is exactly
    /// `00-<32 hex>-<16 hex>-<2 hex>`; a later version (not `ff`) is read by its first four
    /// fields, and whatever follows them (after a `-`) is ignored. Hex must be lowercase.
    ///
    /// # Errors
    /// [`TraceParentError`] saying what is wrong: length, separators, non-lowercase hex,
    /// version `ff`, an all-zero trace or parent id.
    ///
    /// ```
    /// use embus::{TraceContext, TraceParentError};
    ///
    /// let ok = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    /// assert!(!ok?.is_sampled());
    /// let upper = TraceContext::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01");
    /// assert_eq!(upper, Err(TraceParentError::Hex("trace id")));
    /// # Ok::<(), TraceParentError>(())
    /// ```
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return Err(TraceParentError::Length(bytes.len()));
        }
        let version = hex_field(&bytes[0..2], "version")?;
        if version == [0xff] {
            return Err(TraceParentError::Version);
        }
        if version == [0x00] && bytes.len() != 55 {
            return Err(TraceParentError::Length(bytes.len()));
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return Err(TraceParentError::Length(bytes.len()));
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(TraceParentError::Separator);
        }
        let mut trace_id = [0; 16];
        trace_id.copy_from_slice(&hex_field(&bytes[3..35], "trace id")?);
        let mut span_id = [0; 8];
        span_id.copy_from_slice(&hex_field(&bytes[36..52], "parent id")?);
        let flags = hex_field(&bytes[53..55], "flags")?[0];
        if trace_id == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        if span_id == [0; 8] {
            return Err(TraceParentError::ZeroSpanId);
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Reads a header's value as a `traceparent` ([`parse`](Self::parse)).
    pub(crate) fn from_header(value: &[u8]) -> Result<Self, TraceParentError> {
        let text = std::str::from_utf8(value).map_err(|_| TraceParentError::NotText)?;
        Self::parse(text)
    }
}

impl FromStr for TraceContext {
    type Err = TraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The `traceparent` text, version `00`: `00-<trace id>-<span id>-<flags>`, lowercase hex.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

/// Decodes lowercase hex (an even number of digits) into bytes; `field` names it in errors.
fn hex_field(digits: &[u8], field: &'static str) -> Result<Vec<u8>, TraceParentError> {
    let digit = |d: u8| match d {
        b'0'..=b'9' => Ok(d - b'0'),
        b'a'..=b'f' => Ok(d - b'a' + 10),
        _ => Err(TraceParentError::Hex(field)),
    };
    digits
        .chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn new_span_id() -> [u8; 8] {
    random_u64().to_be_bytes()
}

/// A random, non-zero `u64`: std's randomly keyed SipHash over a process-wide counter, the
/// time and the thread (no extra crate; every `RandomState` has fresh keys per thread). Span
/// ids, and stores' instance numbers.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(nanos);
        let value = hasher.finish();
        if value != 0 {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let ctx = TraceContext::parse(SPEC).unwrap();
        assert_eq!(
            ctx.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(
            ctx.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(ctx.flags, 1);
        assert!(ctx.is_sampled());
        let unsampled: TraceContext = SPEC.replace("-01", "-00").parse().unwrap();
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn round_trips() {
        assert_eq!(TraceContext::parse(SPEC).unwrap().to_string(), SPEC);
        for _ in 0..100 {
            let ctx = TraceContext::new_root();
            assert_eq!(TraceContext::parse(&ctx.to_string()), Ok(ctx));
        }
        let flags = TraceContext::parse(&SPEC.replace("-01", "-ab")).unwrap();
        assert_eq!(flags.flags, 0xab);
        assert!(flags.to_string().ends_with("-ab"));
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        use TraceParentError::*;
        let cases: &[(&str, TraceParentError)] = &[
            ("", Length(0)),
            (&SPEC[..54], Length(54)),
            (&format!("{SPEC}-"), Length(56)),
            (&format!("{SPEC}0"), Length(56)),
            (&SPEC.replacen("00-", "ff-", 1), Version),
            (&SPEC.replacen("00-", "0g-", 1), Hex("version")),
            (&SPEC.replacen("00-", "0A-", 1), Hex("version")),
            (&SPEC.to_uppercase(), Hex("trace id")),
            (&SPEC.replace("4bf92f", "4BF92F"), Hex("trace id")),
            (&SPEC.replace("00f067aa", "00F067AA"), Hex("parent id")),
            (&SPEC.replace("-01", "-0x"), Hex("flags")),
            (&SPEC.replace("-01", "-0A"), Hex("flags")),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroSpanId,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Separator,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                Separator,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
                Separator,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                Separator,
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                Length(56),
            ),
        ];
        for (value, error) in cases {
            assert_eq!(TraceContext::parse(value), Err(*error), "{value:?}");
        }
        assert_eq!(
            TraceContext::from_header(b"\xff\xfe"),
            Err(TraceParentError::NotText)
        );
    }

    #[test]
    fn later_versions_read_the_first_four_fields() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let ctx = TraceContext::parse(future).unwrap();
        assert_eq!(ctx, TraceContext::parse(SPEC).unwrap());
        let exact = SPEC.replacen("00-", "01-", 1);
        assert_eq!(TraceContext::parse(&exact).unwrap().to_string(), SPEC);
    }

    #[test]
    fn new_ids_are_never_zero_and_differ() {
        let roots: Vec<TraceContext> = (0..1000).map(|_| TraceContext::new_root()).collect();
        for ctx in &roots {
            assert_ne!(ctx.trace_id, [0; 16]);
            assert_ne!(ctx.span_id, [0; 8]);
            assert!(ctx.is_sampled());
        }
        let mut traces: Vec<_> = roots.iter().map(|c| c.trace_id).collect();
        traces.sort_unstable();
        traces.dedup();
        assert_eq!(traces.len(), roots.len());
        let mut spans: Vec<_> = roots.iter().map(|c| c.span_id).collect();
        spans.sort_unstable();
        spans.dedup();
        assert_eq!(spans.len(), roots.len());
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let parent = TraceContext::parse(SPEC).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.flags, parent.flags);
        assert_ne!(child.span_id, parent.span_id);
        assert_ne!(child.span_id, [0; 8]);
    }
}
