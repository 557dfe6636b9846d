fn main() -> std::process::ExitCode {
    qat_cli::run()
}
