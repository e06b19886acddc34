fn main() -> std::process::ExitCode {
    remora_proxy::cli::main()
}
