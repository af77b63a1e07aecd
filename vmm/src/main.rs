//! `rvm-vmm`: command-line entry point of the VMM.

fn main() {
    eprintln!("rvm-vmm: not built yet");
    std::process::exit(1);
}
