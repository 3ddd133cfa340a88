//! The `mcp-gateway` command: parse flags, load the config (printing every problem),
//! then run the Pingora server.

/// mimalloc: fewer instructions per allocation than glibc's malloc on the request path
/// (docs/benchmarks.md has the counts).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use mcp_gateway::app::{self, RunOptions};
use mcp_gateway::config::{self, ConfigError, LogLevel};
use std::process::ExitCode;

/// Exit status for an unusable config (EX_DATAERR-like, as sysexits' EX_USAGE family).
const EXIT_CONFIG: u8 = 64;

/// mcp-gateway: a high-throughput edge proxy for Model Context Protocol servers.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The YAML config file. Without it the embedded default config is used
    /// (see --print-default-config).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = "MCP_GATEWAY_CONFIG",
        global = true
    )]
    config: Option<String>,

    /// Check the config, print every problem with its path, and exit
    /// (0 when valid, 64 when not).
    #[arg(short = 't', long = "validate")]
    validate: bool,

    /// Log level, overriding logging.level and MCP_GATEWAY_LOG_LEVEL:
    /// off, error, warn, info, debug or trace.
    #[arg(long = "log-level", value_name = "LEVEL", value_parser = parse_level)]
    log_level: Option<LogLevel>,

    /// Run in the background (daemon); the PID goes to server.pid_file.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,

    /// Zero-downtime upgrade: take over the listening sockets of the running instance
    /// (send it SIGQUIT) through server.upgrade_sock.
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,

    /// Print the embedded default config and exit.
    #[arg(long = "print-default-config")]
    print_default_config: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Reload the running gateway's config (everything but the listeners): validates
    /// the file, then asks the gateway through its admin API (when admin.token is set)
    /// or with SIGHUP to the PID in server.pid_file.
    Reload,
    /// Zero-downtime upgrade to this binary: validates the file, starts this binary
    /// with -d -u (it takes over the listening sockets), then sends SIGQUIT to the
    /// running gateway (the PID in server.pid_file), which finishes its work and exits.
    Upgrade,
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    serde_yaml_ng::from_str::<LogLevel>(s)
        .map_err(|_| format!("{s:?} is not a log level (off, error, warn, info, debug, trace)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    let source = cli.config.as_deref().unwrap_or("(embedded default config)");
    let (config, text) = match mcp_gateway::state::check::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(errors) => {
            report(source, &errors);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.validate {
        println!("{source}: OK");
        return ExitCode::SUCCESS;
    }
    if let Some(command) = &cli.command {
        let result = match command {
            Command::Reload => mcp_gateway::control::reload(&config),
            Command::Upgrade => mcp_gateway::control::upgrade(&config, cli.config.as_deref()),
        };
        return match result {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcp-gateway: {e}");
                ExitCode::FAILURE
            }
        };
    }
    mcp_gateway::telemetry::init_logger(&config.logging, cli.log_level.map(LogLevel::filter));
    let opts = RunOptions {
        daemon: cli.daemon,
        upgrade: cli.upgrade,
        config_path: cli.config.clone(),
        level_override: cli.log_level.map(LogLevel::filter),
    };
    let source = mcp_gateway::live::ConfigSource {
        name: source.to_string(),
        text,
    };
    match app::run(config, opts, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(source: &str, errors: &[ConfigError]) {
    eprintln!("{source}: {} problem(s) found:", errors.len());
    for e in errors {
        eprintln!("  {e}");
    }
}
