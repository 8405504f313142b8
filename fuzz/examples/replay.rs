//! Replays `open_file` inputs without libFuzzer, printing every panic (also the ones embus
//! catches), and writes the store file each input stands for:
//! `cargo run --example replay -- <input> <file to write>`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, out] = &args[..] else {
        eprintln!("usage: replay <open_file input> <store file to write>");
        std::process::exit(2);
    };
    let input = std::fs::read(input).expect("read the input");
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        embus_fuzz::open_file::patched(embus_fuzz::open_file::base(), rest)
    };
    std::fs::write(out, &bytes).expect("write the store file");
    eprintln!("wrote {} bytes to {out}", bytes.len());
    // embus's quiet hook wraps the hook of its first use; one set now replaces it, so that
    // the caught panics print too.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("panic: {info}\n{}", std::backtrace::Backtrace::force_capture());
    }));
    embus_fuzz::open_file::open_and_read(&bytes);
    eprintln!("no panic reached the caller");
}
