//! The `qat` command line: argument parsing and one module per subcommand.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "qat", version, about = "Quantization-aware training for LLMs: load HF checkpoints, fake-quantize, train, export.")]
struct Cli {
    /// Worker threads of the CPU backend (matrix products and element-wise kernels); default:
    /// `RAYON_NUM_THREADS` if set, else one per core. Lower it to share a machine.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
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
    /// Sample training documents from a model (data-free distillation, as LLM-QAT).
    Synthesize(cmd::synthesize::Args),
    /// Convert a GGUF model into a Hugging Face checkpoint directory.
    Import(cmd::import::Args),
    /// Rotate a checkpoint's residual stream and value heads (QuaRot/SpinQuant R1, R2), merged
    /// into the weights: the same function, weights that GPTQ quantizes better.
    Rotate(cmd::rotate::Args),
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
    /// Draw a run's training.png from its metrics.jsonl (also mid-run).
    Plot(cmd::plot::Args),
}

/// Tells glibc's allocator to serve every block from the heap and never give freed memory back
/// to the kernel. By default blocks over a (≤ 32 MiB) threshold are fresh `mmap`s that the
/// kernel zeroes page by page on first touch; a training step allocates and frees gigabytes of
/// activations, and the page faults and zeroing were ~10% of its time (docs/benchmarks.md:
/// 59 → 72 tokens/s on the SmolLM2 QAT step, same peak RSS).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1); // -1: never trim (mallopt(3))
    }
}

/// Restores the default action of `SIGPIPE`, so that `qat … | head` ends quietly when the reader
/// closes the pipe, as other Unix tools do; Rust ignores the signal and `println!` then panics
/// on the closed pipe.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal disposition to its default before other threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sizes the global rayon pool that Burn's CPU backend and `gemm` run their work on.
fn set_threads(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("must be at least 1".into());
    }
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| e.to_string())
}

/// Parses arguments, runs the command, prints the whole error chain on failure.
pub fn run() -> std::process::ExitCode {
    keep_freed_memory();
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    if let Some(n) = cli.threads
        && let Err(e) = set_threads(n)
    {
        eprintln!("error: --threads {n}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Synthesize(a) => cmd::synthesize::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Rotate(a) => cmd::rotate::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::VerifyExport(a) => cmd::verify_export::run(a),
        Command::Plot(a) => cmd::plot::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A run that a signal stopped after checkpointing: a scheduler's job script can tell
            // it from a failure and requeue the same command.
            match qat_train::interrupt::requested() {
                Some(_) => std::process::ExitCode::from(qat_train::interrupt::EXIT_INTERRUPTED as u8),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
