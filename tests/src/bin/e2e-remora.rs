//! The `remora` program (control plane and CLI), built inside this package so that its
//! integration tests find it through `NEXTEST_BIN_EXE_e2e-remora` and it is rebuilt before they
//! run, as `e2e-remora-proxy` is.

fn main() -> std::process::ExitCode {
    remora_control_plane::run_cli(std::env::args_os())
}
