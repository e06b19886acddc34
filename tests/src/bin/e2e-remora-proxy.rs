//! The `remora-proxy` program, built inside this package so that its integration tests can find
//! it through `CARGO_BIN_EXE_e2e-remora-proxy` (Cargo only sets that for a package's own binaries).

fn main() -> std::process::ExitCode {
    remora_proxy::cli::main()
}
