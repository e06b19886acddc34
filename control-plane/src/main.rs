//! `remora`: everything is in the library, so tests can run it too.

fn main() -> std::process::ExitCode {
    remora_control_plane::run_cli(std::env::args_os())
}
