//! Timely cluster settings of `recflow run`: how many processes, which one
//! this is and where its peers listen, from flags or (for Kubernetes)
//! environment variables. The result is timely's own
//! [`timely::CommunicationConfig::Cluster`]; timely does the networking.

use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;

/// Cluster flags of `recflow run` (each also read from its environment variable).
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Processes in the timely cluster (1 = a single process, no networking).
    #[arg(long, env = "RECFLOW_PROCESSES")]
    pub processes: Option<usize>,
    /// This process's index in 0..processes. Default: the ordinal ending the host
    /// name (StatefulSet pod `recflow-2` -> 2).
    #[arg(long, env = "RECFLOW_PROCESS_INDEX")]
    pub process: Option<usize>,
    /// Peers, one `host:port` per process in index order: a file (one per line), a
    /// comma-separated list, or a template with `{i}` expanded for i in 0..processes
    /// (`recflow-{i}.recflow-cluster:2101`).
    #[arg(long, env = "RECFLOW_HOSTS")]
    pub hosts: Option<String>,
    /// Where this process accepts its peers' connections (default: its own entry of
    /// the host list), e.g. `0.0.0.0:2101` when its own name does not resolve yet.
    #[arg(long, env = "RECFLOW_CLUSTER_LISTEN")]
    pub listen: Option<String>,
}

/// The resolved shape of a run: processes × workers and this process's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Timely workers in this process.
    pub workers: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// Peer addresses by process index (empty for a single process).
    pub hosts: Vec<String>,
}

impl Cluster {
    /// One process with `workers` workers.
    pub fn single(workers: usize) -> Cluster {
        Cluster { workers: workers.max(1), processes: 1, process: 0, hosts: Vec::new() }
    }

    /// True when this process is the first (or only) one: the one that reads a
    /// file input, which the processes cannot split between them.
    pub fn is_first(&self) -> bool {
        self.process == 0
    }

    /// Timely's configuration for this process.
    pub fn timely_config(&self) -> timely::Config {
        if self.processes <= 1 {
            return timely::Config::process(self.workers);
        }
        timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses: self.hosts.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        }
    }
}

impl ClusterArgs {
    /// Resolves the flags/environment into a [`Cluster`] of `workers` per process.
    pub fn resolve(&self, workers: usize) -> anyhow::Result<Cluster> {
        let processes = self.processes.unwrap_or(1);
        if processes == 0 {
            bail!("--processes must be at least 1");
        }
        if processes == 1 {
            return Ok(Cluster::single(workers));
        }
        let process = match self.process {
            Some(p) => p,
            None => host_ordinal(&hostname()).with_context(|| {
                format!(
                    "--process (RECFLOW_PROCESS_INDEX) is not set and the host name {:?} does not end in -<ordinal>",
                    hostname()
                )
            })?,
        };
        if process >= processes {
            bail!("--process {process} is out of range for --processes {processes}");
        }
        let spec = self.hosts.as_deref().context("--hosts (RECFLOW_HOSTS) is required with --processes > 1")?;
        let mut hosts = parse_hosts(spec, processes)?;
        if hosts.len() != processes {
            bail!("the host list has {} entries, --processes is {processes}", hosts.len());
        }
        if let Some(listen) = &self.listen {
            // Timely binds to the process's own entry and connects to the others',
            // so only this process's copy of the list is changed.
            hosts[process] = listen.clone();
        }
        Ok(Cluster { workers: workers.max(1), processes, process, hosts })
    }
}

/// Host list from a `{i}` template, a file or a comma-separated list.
pub fn parse_hosts(spec: &str, processes: usize) -> anyhow::Result<Vec<String>> {
    let spec = spec.trim();
    if spec.contains("{i}") {
        return Ok((0..processes).map(|i| spec.replace("{i}", &i.to_string())).collect());
    }
    let text = if Path::new(spec).is_file() {
        std::fs::read_to_string(spec).with_context(|| format!("reading hosts file {spec}"))?
    } else if spec.contains(':') {
        spec.replace(',', "\n")
    } else {
        bail!("--hosts {spec:?} is neither a file, a host:port list nor a {{i}} template");
    };
    let hosts: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    for h in &hosts {
        if !h.contains(':') {
            bail!("host {h:?} has no :port");
        }
    }
    Ok(hosts)
}

/// The ordinal a StatefulSet gives its pods: `recflow-2` -> 2 (domain part ignored).
pub fn host_ordinal(host: &str) -> Option<usize> {
    let short = host.split('.').next()?;
    short.rsplit_once('-')?.1.parse().ok()
}

/// This machine's host name (`HOSTNAME`, else the kernel's).
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_template_list_and_file() {
        let t = parse_hosts("recflow-{i}.recflow-cluster:2101", 3).unwrap();
        assert_eq!(t[2], "recflow-2.recflow-cluster:2101");
        assert_eq!(parse_hosts("a:1, b:2", 2).unwrap(), vec!["a:1", "b:2"]);
        let f = std::env::temp_dir().join(format!("recflow-hosts-{}", std::process::id()));
        std::fs::write(&f, "# peers\nh0:7000\n\nh1:7000\n").unwrap();
        assert_eq!(parse_hosts(f.to_str().unwrap(), 2).unwrap(), vec!["h0:7000", "h1:7000"]);
        assert!(parse_hosts("nohost", 1).is_err());
    }

    #[test]
    fn ordinal_from_statefulset_pod_name() {
        assert_eq!(host_ordinal("recflow-2"), Some(2));
        assert_eq!(host_ordinal("recflow-pipeline-10.recflow-cluster.default.svc"), Some(10));
        assert_eq!(host_ordinal("laptop"), None);
    }

    #[test]
    fn resolve_checks_the_shape() {
        let args = ClusterArgs {
            processes: Some(2),
            process: Some(1),
            hosts: Some("a:1,b:2".into()),
            listen: Some("0.0.0.0:2".into()),
        };
        let c = args.resolve(3).unwrap();
        assert_eq!((c.processes, c.process, c.workers), (2, 1, 3));
        assert_eq!(c.hosts, vec!["a:1", "0.0.0.0:2"]);
        assert!(ClusterArgs { process: Some(2), ..args.clone() }.resolve(1).is_err());
        assert!(ClusterArgs { hosts: Some("a:1".into()), ..args.clone() }.resolve(1).is_err());
        assert_eq!(ClusterArgs::default().resolve(2).unwrap(), Cluster::single(2));
    }
}
