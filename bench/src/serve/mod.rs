//! `weft-bench serve`: what the serving layer costs, measured against what
//! it cannot beat (`weft-bench freshness`, the speed layer's delay as a
//! client sees it, is in [`crate::freshness`]).
//!
//! * **The floor** (`weft-bench floor`, [`crate::floor`]): tonic alone,
//!   answering one fixed profile.
//! * **Redis** is the peer: each user's `GetProfileResponse`, encoded once
//!   (`--load-redis`), stored under `profile:<user>` and read back with `GET`
//!   and decoded, so the client pays for decoding as it does over gRPC. It
//!   is what a team would run instead of Weft if it precomputed profiles
//!   into a key-value store.
//! * **weft serve** itself.
//! * **A forwarder** (`--forwarder`): a shard of the same fleet that does
//!   not own the users asked for (`--only-partitions`), so it forwards every
//!   call to `--weft`, their owner: the hop's cost, as a ratio to calling
//!   the owner directly.
//!
//! `weft-bench serve` measures every target given, one after the other, in
//! one run, with the same users (uniformly random among `u0000000 ..`), the
//! same number of workers and of connections, in two phases each:
//!
//! 1. *fixed rate*: an open loop at `--rate` requests/s in total. A pacer
//!    thread releases each request at its scheduled time; a request's
//!    latency is measured from that *scheduled* time, not from when a worker
//!    got around to sending it, so a target that stalls is charged for the
//!    requests it held back (no coordinated omission). The pacer's own delay
//!    (scheduled → sent, the load generator's overhead) is reported apart.
//! 2. *max throughput*: a closed loop, every worker sending back to back;
//!    latency from send to reply.
//!
//! `--phases` picks which of the two run (`fixed`, `max` or both, the
//! default), e.g. `--phases fixed` for a steady load while something else
//! happens to the server (`tests/bench/swaps_and_outage.sh`). With
//! `--timeline-secs W` the fixed-rate phase is also reported per window of
//! W seconds from the phase start (a request falls into the window of its
//! scheduled time): successes, errors, p99 and max latency, and for weft the
//! freshness its replies carried (the largest `speed_lag_ms` and
//! `speed_lag_messages`, the batch view versions seen). Workers keep their
//! own windows, merged at the end like the rest of their records; each row
//! also carries its phase's start as Unix milliseconds, so outside events
//! can be placed on the timeline.
//!
//! Latencies of successful replies go into HDR histograms in microseconds.
//! A failed request (any non-OK status, a Redis error, a missing Redis key,
//! a 5 s timeout) counts as an error, reported by kind, and the run goes on;
//! ratios over phases with errors are flagged as not comparable.
//!
//! Everything runs on one machine here (`tests/bench/serve_vs_floor.sh`):
//! load generator and servers share the cores, so absolute figures are
//! pessimistic and ratios measured in the same run are what to compare.
//! Because every microsecond the load generator spends is taken from the
//! servers, it is kept lean: gRPC targets are called with a unary client
//! written straight on h2 (`--grpc-client h2`, the default; `tonic` keeps
//! tonic's generated client), on a one-thread runtime by default, and each
//! phase reports the generator's own CPU time per request.

mod client;
mod phase;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use weft_proto::v1::profile_service_client::ProfileServiceClient;

use self::client::{Conn, GrpcClient, Target, grpc_target, load_redis, redis_conns};
use self::phase::{Phase, PhaseArg, run_phase};
use self::report::{Row, ServeReport, print_timelines, probe, ratios};
use weft_config::PartitionSet;
use weft_core::partition::partition_for_user;

use crate::common::{bearer, connect, user_id, write_json};

fn partitions_of(set: &str) -> Result<PartitionSet> {
    PartitionSet::parse(set).map_err(|e| anyhow::anyhow!("--only-partitions {set:?}: {e}"))
}

#[derive(Debug, Args)]
pub(crate) struct ServeBenchArgs {
    /// `weft serve`'s gRPC address.
    #[arg(long)]
    weft: String,
    /// API key (its tenant holds the users).
    #[arg(long)]
    key: String,
    /// Users u0000000 .. u{N-1}, picked uniformly at random per request.
    #[arg(long, default_value_t = 1_000_000)]
    users: u32,
    /// Start the users at this rank instead (u{first} .. u{first+N-1}). A
    /// range past the tenant's users measures requests for unknown users:
    /// the request path with no profile to build.
    #[arg(long, default_value_t = 0, conflicts_with = "redis")]
    first_user: u32,
    /// Features to ask for in every `GetProfile`, comma-separated (default:
    /// all of them).
    #[arg(long, value_delimiter = ',', conflicts_with = "redis")]
    features: Vec<String>,
    /// Only the users of these Kafka partitions (e.g. `0-2`: a shard's),
    /// by the producers' partitioner over `--tenant`/user.
    #[arg(long, requires = "tenant")]
    only_partitions: Option<String>,
    /// The users' tenant (for `--only-partitions`).
    #[arg(long)]
    tenant: Option<String>,
    /// The topic's partition count (for `--only-partitions`).
    #[arg(long, default_value_t = 8)]
    topic_partitions: u32,
    /// A shard that does not own the users (see `--only-partitions`): it
    /// forwards each call to its owner (`--weft`).
    #[arg(long, requires = "only_partitions")]
    forwarder: Option<String>,
    /// PID of the forwarding shard (see --weft-pid).
    #[arg(long, requires = "forwarder")]
    forwarder_pid: Option<u32>,
    /// `weft-bench floor`'s gRPC address.
    #[arg(long)]
    floor: Option<String>,
    /// Redis `host:port` holding `profile:<user>` (see --load-redis).
    #[arg(long)]
    redis: Option<String>,
    /// Workers (requests in flight at most).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections (gRPC) or Redis connections, shared by workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests/s in total in the fixed-rate phase.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// The measured phases to run, in this order whatever the order given.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fixed,max")]
    phases: Vec<PhaseArg>,
    /// Also report the fixed-rate phase per window of this many seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeline_secs: Option<u64>,
    /// Length of each measured phase.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Run every target's phases this many times, alternating targets
    /// (floor, Redis, weft, floor, ...), and report each round's ratios and
    /// their median: on a shared machine, a slow minute then hits one
    /// round of every target rather than one target.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Closed-loop warm-up before each target's phases (not recorded).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Before measuring, copy every user's GetProfileResponse from weft to
    /// Redis (skipped when Redis already holds --users keys).
    #[arg(long, requires = "redis")]
    load_redis: bool,
    /// Tokio worker threads of the load generator. One (a current-thread
    /// runtime, plus the fixed-rate pacer thread) costs the least CPU per
    /// request on a small machine the servers share, and so disturbs them
    /// least.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The load generator's gRPC client (the same for every gRPC target).
    #[arg(long, value_enum, default_value = "h2")]
    grpc_client: GrpcClient,
    /// PID of the `weft serve` process, when it runs on this machine: each
    /// phase then also reports its CPU time per request (`/proc/PID/stat`),
    /// the cost that decides how much of the shared cores a server leaves.
    #[arg(long)]
    weft_pid: Option<u32>,
    /// PID of the floor process (see --weft-pid).
    #[arg(long, requires = "floor")]
    floor_pid: Option<u32>,
    /// PID of the Redis server (see --weft-pid).
    #[arg(long, requires = "redis")]
    redis_pid: Option<u32>,
    /// Seed of the user choice (same seed, same user sequence per target).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `weft-bench serve`: floor, Redis and weft at the same load.
pub(crate) fn serve(a: &ServeBenchArgs) -> Result<()> {
    if a.users == 0 || a.concurrency == 0 || a.connections == 0 || a.threads == 0 {
        bail!("--users, --concurrency, --connections and --threads must be at least 1");
    }
    if !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--rate must be a positive number");
    }
    if a.first_user.checked_add(a.users).is_none() {
        bail!("--first-user + --users must fit in 32 bits");
    }
    // One thread: a current-thread runtime, whose tasks never wake another
    // worker thread to steal them.
    let rt = match a.threads {
        1 => weft_core::runtime::current_thread()?,
        n => weft_core::runtime::multi_thread("weft-bench", n)?,
    };
    rt.block_on(serve_async(a))
}

async fn serve_async(a: &ServeBenchArgs) -> Result<()> {
    let auth = bearer(&a.key)?;
    let weft = grpc_target(a, &auth, ("weft", &a.weft, a.weft_pid), true).await?;
    let mut targets = Vec::new();
    if let Some(addr) = &a.floor {
        targets.push(grpc_target(a, &auth, ("floor", addr, a.floor_pid), false).await?);
    }
    if let Some(addr) = &a.redis {
        let conns = redis_conns(addr, a.connections).await?;
        if a.load_redis {
            let mut client = ProfileServiceClient::new(connect(&a.weft).await?);
            load_redis(&mut client, &auth, &conns, a.users).await?;
        }
        targets.push(Target {
            name: "redis",
            conns: conns.into_iter().map(Conn::Redis).collect(),
            live_freshness: false,
            pid: a.redis_pid,
        });
    }
    targets.push(weft);
    if let Some(addr) = &a.forwarder {
        targets.push(grpc_target(a, &auth, ("forwarder", addr, a.forwarder_pid), true).await?);
    }
    for t in &targets {
        probe(t).await?;
    }

    let users: Arc<[u32]> = (a.first_user..a.first_user + a.users)
        .filter(|&rank| match (&a.only_partitions, &a.tenant) {
            (Some(set), Some(tenant)) => partitions_of(set).is_ok_and(|held| {
                held.contains(partition_for_user(
                    tenant,
                    &user_id(rank),
                    a.topic_partitions,
                ))
            }),
            _ => true,
        })
        .collect();
    if let Some(set) = &a.only_partitions {
        partitions_of(set)?;
        if users.is_empty() {
            bail!("no user of --users is on partitions {set}");
        }
    }
    let duration = Duration::from_secs(a.duration_secs);
    let cores = std::thread::available_parallelism().map_or(0, |p| p.get());
    let mut phases = vec![Phase::Warmup];
    if a.phases.contains(&PhaseArg::Fixed) {
        phases.push(Phase::Fixed(a.rate));
    }
    if a.phases.contains(&PhaseArg::Max) {
        phases.push(Phase::Max);
    }
    let mut rows = Vec::new();
    for round in 1..=a.rounds {
        for t in &targets {
            for &phase in &phases {
                let length = match phase {
                    Phase::Warmup if a.warmup_secs == 0 => continue,
                    Phase::Warmup => Duration::from_secs(a.warmup_secs),
                    _ => duration,
                };
                eprintln!(
                    "round {round}/{}: {}: {}{} for {} s, {} workers, {} connections",
                    a.rounds,
                    t.name,
                    phase.name(),
                    match phase {
                        Phase::Fixed(r) => format!(" ({r:.0}/s)"),
                        _ => String::new(),
                    },
                    length.as_secs(),
                    a.concurrency,
                    a.connections
                );
                let window = match phase {
                    Phase::Fixed(_) => a.timeline_secs.map(Duration::from_secs),
                    Phase::Warmup | Phase::Max => None,
                };
                let run = run_phase(
                    t,
                    a.concurrency,
                    users.clone(),
                    length,
                    phase,
                    a.seed,
                    window,
                )
                .await?;
                if phase != Phase::Warmup {
                    rows.push(Row::new(round, t.name, phase, &run)?);
                }
            }
        }
    }

    let asked = if a.features.is_empty() {
        "all features".to_string()
    } else {
        format!("features {}", a.features.join(","))
    };
    println!(
        "weft-bench serve: {} users from u{:07}, {asked}, {} workers, {} connections per target, fixed rate {:.0}/s, {} s per phase ({} s warm-up), load generator on {} threads, {cores} cores shared with the servers",
        users.len(),
        a.first_user,
        a.concurrency,
        a.connections,
        a.rate,
        a.duration_secs,
        a.warmup_secs,
        a.threads
    );
    let several = a.rounds > 1;
    let round_cell = |r: u32| {
        if several {
            format!("{r} | ")
        } else {
            String::new()
        }
    };
    println!(
        "| {}target | phase | QPS | p50 µs | p99 µs | p99.9 µs | max µs | errors |",
        if several { "round | " } else { "" }
    );
    println!(
        "|{}---|---|---|---|---|---|---|---|",
        if several { "---|" } else { "" }
    );
    for r in &rows {
        println!(
            "| {}{} | {} | {:.0} | {} | {} | {} | {} | {} |",
            round_cell(r.round),
            r.target,
            r.phase,
            r.qps,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.errors
        );
    }
    let round_label = |r: u32| {
        if several {
            format!("round {r}: ")
        } else {
            String::new()
        }
    };
    for r in &rows {
        let cpu = |who: &str, us: Option<f64>, cores: Option<f64>| match (us, cores) {
            (Some(us), Some(cores)) => format!("{who} {us:.1} µs a request, {cores:.2} of a core"),
            _ => format!("{who} not known"),
        };
        let mut line = cpu(
            "load generator",
            r.client_cpu_us_per_request,
            r.client_cores,
        );
        if r.server_cpu_us_per_request.is_some() {
            line += &format!(
                "; {}",
                cpu("server", r.server_cpu_us_per_request, r.server_cores)
            );
        }
        println!(
            "{}{} {}: CPU: {line}",
            round_label(r.round),
            r.target,
            r.phase
        );
        if let (Some(p50), Some(p99)) = (r.send_lag_p50_us, r.send_lag_p99_us) {
            println!(
                "{}{} {}: load generator delay (scheduled → sent) p50 {p50} µs, p99 {p99} µs",
                round_label(r.round),
                r.target,
                r.phase
            );
        }
        for (kind, n) in &r.error_kinds {
            println!(
                "{}{} {}: {n} errors: {kind}",
                round_label(r.round),
                r.target,
                r.phase
            );
        }
    }
    let ratios = ratios(&rows, a.rounds);
    for r in &ratios {
        let caveat = if r.errors {
            " (errors in these phases: not comparable)"
        } else {
            ""
        };
        let label = match r.round {
            0 => format!("median of {} rounds: ", a.rounds),
            n => round_label(n),
        };
        println!("{label}{}: {:.2}{caveat}", r.what, r.value);
    }
    print_timelines(&rows);
    if let Some(path) = &a.json {
        write_json(
            path,
            &ServeReport {
                users: users.len() as u32,
                first_user: a.first_user,
                features: a.features.clone(),
                concurrency: a.concurrency,
                connections: a.connections,
                rate: a.rate,
                duration_secs: a.duration_secs,
                warmup_secs: a.warmup_secs,
                rounds: a.rounds,
                timeline_secs: a.timeline_secs,
                client_threads: a.threads,
                cores,
                rows,
                ratios,
            },
        )?;
    }
    Ok(())
}
