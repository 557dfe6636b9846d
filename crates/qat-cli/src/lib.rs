//! The `qat` command line: argument parsing and one module per subcommand.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "qat", version, about = "Quantization-aware training for LLMs: load HF checkpoints, fake-quantize, train, export.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quantization-aware training from a TOML config (or resume a run).
    Train(cmd::train::Args),
    /// Many short runs over a grid or random sample of config values, one results table.
    Sweep(cmd::sweep::Args),
    /// Generate text from a checkpoint (greedy or sampled; raw prompt or chat).
    Generate(cmd::generate::Args),
    /// Convert a GGUF model into a Hugging Face checkpoint directory.
    Import(cmd::import::Args),
    /// Round-to-nearest quantization with the QAT quantizers (the PTQ baseline).
    Quantize(cmd::quantize::Args),
    /// Perplexity of a checkpoint on text files.
    Eval(cmd::eval::Args),
    /// Export a run as pseudo-quantized safetensors (--format hf) or GGUF (--format gguf).
    Export(cmd::export::Args),
    /// Throughput of forward, plain training and QAT training steps.
    Bench(cmd::bench::Args),
    /// Write the logits of a token sequence as JSON (for comparisons with transformers).
    Logits(cmd::logits::Args),
    /// Check that a GGUF export holds exactly the values of an HF export.
    VerifyExport(cmd::verify_export::Args),
}

/// Parses arguments, runs the command, prints the whole error chain on failure.
pub fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::VerifyExport(a) => cmd::verify_export::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
