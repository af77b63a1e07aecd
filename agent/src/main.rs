//! `rvm-agent`: the guest's PID 1 and in-guest container engine.

fn main() {
    eprintln!("rvm-agent: not built yet");
    std::process::exit(1);
}
