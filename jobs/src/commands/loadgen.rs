//! `recflow loadgen`: an open-loop HTTP load generator for
//! `POST /api/v1/recommend` (keep-alive HTTP/1.1 over plain TCP). Requests
//! are scheduled at a fixed rate and latency is measured from each request's
//! scheduled time, so a stalled server cannot hide queueing (no coordinated
//! omission). Requests are released on time by an OS-timer thread; the
//! latency from each request's actual send is reported too (it differs from
//! the scheduled one when every connection was busy, or the generator late).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Arguments of `recflow loadgen`.
#[derive(Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Requests per second to schedule.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// X-Tenant-Id.
    #[arg(long, default_value = "tenant_000")]
    pub tenant: String,
    /// API key of that tenant.
    #[arg(long)]
    pub key: String,
    /// Scenario of the requests.
    #[arg(long, default_value = "vlog_main_feed")]
    pub scenario: String,
    /// User ids are `user_{n:07}` for n = first_user + i * user_stride, i < users.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// See --users (4 = the generator's users of tenant_000 with 4 tenants).
    #[arg(long, default_value_t = 4)]
    pub user_stride: u64,
    /// See --users.
    #[arg(long, default_value_t = 0)]
    pub first_user: u64,
    /// Items per request.
    #[arg(long, default_value_t = 10)]
    pub count: u32,
}

fn request(a: &LoadgenArgs, n: u64) -> Vec<u8> {
    let user = a.first_user + (n % a.users.max(1)) * a.user_stride;
    let body = format!(r#"{{"scenario_id":"{}","count":{}}}"#, a.scenario, a.count);
    format!(
        "POST /api/v1/recommend HTTP/1.1\r\nHost: {}\r\nX-Tenant-Id: {}\r\nAuthorization: Bearer {}\r\n\
         X-User-Id: user_{user:07}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        a.addr,
        a.tenant,
        a.key,
        body.len()
    )
    .into_bytes()
}

/// Reads one response; returns its status.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("non-UTF-8 response head")?;
            let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).context("bad status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .context("no content-length")?;
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed mid-body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Results {
    latencies_us: Vec<u64>,
    /// From the request's actual send to its response.
    service_us: Vec<u64>,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// `recflow loadgen` entry point.
pub fn main(args: LoadgenArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let total = (args.rate * args.duration as f64) as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let results = Arc::new(Mutex::new(Results::default()));
    let args = Arc::new(args);
    let start = Instant::now() + Duration::from_millis(100);
    // Requests are released by a thread sleeping with the OS timer (tens of
    // µs late), not tokio's 1 ms timer wheel; idle connections take them in turn.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let ticker = std::thread::spawn(move || {
        for n in 0..total {
            let due = start + interval.mul_f64(n as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if tx.send((n, due)).is_err() {
                break;
            }
        }
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let wall = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections.max(1) {
            let (args, rx, results) = (args.clone(), rx.clone(), results.clone());
            tasks.push(tokio::spawn(async move {
                let mut local = Results::default();
                let mut conn: Option<TcpStream> = None;
                let mut buf = Vec::with_capacity(16384);
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((n, due)) = next else { break };
                    let sent = Instant::now();
                    let outcome = async {
                        if conn.is_none() {
                            let s = TcpStream::connect(&args.addr).await?;
                            s.set_nodelay(true)?;
                            conn = Some(s);
                        }
                        let s = conn.as_mut().context("connected")?;
                        s.write_all(&request(&args, n)).await?;
                        read_response(s, &mut buf).await
                    }
                    .await;
                    match outcome {
                        Ok(status) => {
                            local.latencies_us.push(due.elapsed().as_micros() as u64);
                            local.service_us.push(sent.elapsed().as_micros() as u64);
                            *local.statuses.entry(status).or_default() += 1;
                        }
                        Err(_) => {
                            local.errors += 1;
                            conn = None;
                        }
                    }
                }
                let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
                r.latencies_us.extend(local.latencies_us);
                r.service_us.extend(local.service_us);
                r.errors += local.errors;
                for (k, v) in local.statuses {
                    *r.statuses.entry(k).or_default() += v;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        start.elapsed()
    });
    ticker.join().map_err(|_| anyhow::anyhow!("the request ticker panicked"))?;
    let mut r = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    r.latencies_us.sort_unstable();
    r.service_us.sort_unstable();
    let done = r.latencies_us.len();
    println!(
        "requests={done} errors={} statuses={:?} seconds={:.2} achieved_rps={:.0} \
         latency_ms p50={:.3} p90={:.3} p99={:.3} p99.9={:.3} max={:.3} \
         from_send_ms p50={:.3} p99={:.3}",
        r.errors,
        r.statuses,
        wall.as_secs_f64(),
        done as f64 / wall.as_secs_f64(),
        pct(&r.latencies_us, 0.50),
        pct(&r.latencies_us, 0.90),
        pct(&r.latencies_us, 0.99),
        pct(&r.latencies_us, 0.999),
        pct(&r.latencies_us, 1.0),
        pct(&r.service_us, 0.50),
        pct(&r.service_us, 0.99),
    );
    Ok(())
}
