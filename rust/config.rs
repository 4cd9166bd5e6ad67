//! The core's configuration: the JSON written by `ClusterConfig.to_core_json()` in Python
//! (see docs/internals.md). Python validates first; [`CoreConfig::validate`] re-checks what the core
//! relies on, so a hand-written JSON cannot put the core in a bad state.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::net::IpAddr;

use crate::error::{Error, Result};

/// Top-level configuration of one channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// Channel name, used in thread names and logs.
    pub name: String,
    /// Default send-option bits.
    pub send_options: u32,
    /// Allows non-loopback addresses without a secret.
    pub insecure: bool,
    /// Tokio worker threads.
    pub worker_threads: usize,
    /// Events that may wait for the Python dispatcher before network tasks wait.
    pub event_queue_size: usize,
    /// Membership service.
    pub membership: MembershipConfig,
    /// TCP receiver.
    pub receiver: ReceiverConfig,
    /// Sender pool.
    pub sender: SenderConfig,
    /// The interceptor stack, first = closest to the application.
    pub interceptors: Vec<InterceptorConfig>,
    /// Shared-secret security (absent or no secrets: off).
    #[serde(default)]
    pub security: SecurityConfig,
}

/// Shared-secret encryption and authentication.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Secrets: the first sends, all are accepted. Empty = no encryption.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Accepted clock difference for timestamps, ms.
    #[serde(default = "default_replay_window_ms")]
    pub replay_window_ms: u64,
    /// Nonces remembered per sender.
    #[serde(default = "default_replay_cache")]
    pub replay_cache: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            secrets: Vec::new(),
            replay_window_ms: default_replay_window_ms(),
            replay_cache: default_replay_cache(),
        }
    }
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("SecurityConfig")
            .field("secrets", &format_args!("<{} hidden>", self.secrets.len()))
            .field("replay_window_ms", &self.replay_window_ms)
            .field("replay_cache", &self.replay_cache)
            .finish()
    }
}

fn default_replay_window_ms() -> u64 {
    10_000
}

fn default_replay_cache() -> usize {
    16_384
}

fn default_max_members() -> usize {
    1024
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

/// Multicast or static membership.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipConfig {
    /// Multicast group.
    pub address: IpAddr,
    /// Multicast port.
    pub port: u16,
    /// Heartbeat interval.
    pub frequency_ms: u64,
    /// Silence after which a member expires.
    pub drop_time_ms: u64,
    /// Interface address for multicast (resolved by Python; never absent).
    pub bind: IpAddr,
    /// Multicast TTL, or the OS default.
    pub ttl: Option<u32>,
    /// Membership domain bytes.
    pub domain: Vec<u8>,
    /// Application payload carried in heartbeats.
    pub payload: Vec<u8>,
    /// Disables IP_MULTICAST_LOOP (our own host's members would not hear us).
    pub local_loopback_disabled: bool,
    /// Static peers; when non-empty, no multicast is used.
    pub static_members: Vec<StaticMemberConfig>,
    /// Most members kept; more are ignored and counted.
    #[serde(default = "default_max_members")]
    pub max_members: usize,
}

/// One static peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMemberConfig {
    /// Peer address.
    pub host: IpAddr,
    /// Peer receiver port.
    pub port: u16,
    /// Its unique id, when known (16 bytes).
    pub unique_id: Option<Vec<u8>>,
    /// Its domain.
    pub domain: Vec<u8>,
}

/// The TCP receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Listen address.
    pub address: IpAddr,
    /// First port tried.
    pub port: u16,
    /// How many consecutive ports to try.
    pub auto_bind: u16,
    /// Largest frame body accepted, checked before allocating.
    pub max_frame: usize,
    /// Cap on concurrent inbound connections.
    pub max_connections: usize,
    /// Inbound connections silent this long are closed (senders ping idle connections).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

/// The sender pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    /// Budget for one send, including acks.
    pub timeout_ms: u64,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// Resends after a reconnect.
    pub max_retries: u32,
    /// TCP keepalive on sender sockets.
    pub keepalive: bool,
}

/// One interceptor by name, with its options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptorConfig {
    /// Interceptor name (`dispatch`, `failure_detector`, `order`, ...).
    pub name: String,
    /// Its options, already normalised by Python.
    #[serde(default)]
    pub options: Map<String, Value>,
}

impl InterceptorConfig {
    /// An unsigned option, or its default; a wrong type is a config error naming it.
    pub fn u64_opt(&self, key: &str, default: u64) -> Result<u64> {
        match self.options.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::Config(format!(
                    "interceptors.{}.{key}: expected a non-negative integer, got {v}",
                    self.name
                ))
            }),
        }
    }

    /// A string option, or its default.
    pub fn str_opt(&self, key: &str, default: &str) -> Result<String> {
        match self.options.get(key) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(Error::Config(format!(
                "interceptors.{}.{key}: expected a string, got {v}",
                self.name
            ))),
        }
    }

    /// A byte-list option (list of ints 0..=255), or None.
    pub fn bytes_opt(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.options.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "interceptors.{}.{key}: expected bytes",
                                self.name
                            ))
                        })
                })
                .collect::<Result<Vec<u8>>>()
                .map(Some),
            Some(Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
            Some(v) => Err(Error::Config(format!(
                "interceptors.{}.{key}: expected bytes, got {v}",
                self.name
            ))),
        }
    }
}

fn is_loopback(ip: &IpAddr) -> bool {
    ip.is_loopback()
}

impl CoreConfig {
    /// Parses and validates the JSON.
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: CoreConfig = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("core configuration: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the core relies on.
    pub fn validate(&self) -> Result<()> {
        let m = &self.membership;
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        if m.static_members.is_empty() && !m.address.is_multicast() {
            return bad(
                "membership.address",
                format!("{} is not a multicast address", m.address),
            );
        }
        if m.frequency_ms < 10 {
            return bad("membership.frequency_ms", "must be at least 10".into());
        }
        if m.drop_time_ms <= m.frequency_ms {
            return bad(
                "membership.drop_time_ms",
                "must be larger than frequency_ms".into(),
            );
        }
        if self.receiver.auto_bind == 0 {
            return bad("receiver.auto_bind", "must be at least 1".into());
        }
        if !(1024..=1 << 30).contains(&self.receiver.max_frame) {
            return bad("receiver.max_frame", "must be 1024..1073741824".into());
        }
        if self.worker_threads == 0 || self.worker_threads > 64 {
            return bad("worker_threads", "must be 1..64".into());
        }
        if self.event_queue_size == 0 {
            return bad("event_queue_size", "must be at least 1".into());
        }
        for (i, secret) in self.security.secrets.iter().enumerate() {
            if secret.len() < 16 {
                return bad(
                    &format!("security.secrets[{i}]"),
                    "must be at least 16 bytes".into(),
                );
            }
        }
        if self.receiver.idle_timeout_ms < 1000 {
            return bad("receiver.idle_timeout_ms", "must be at least 1000".into());
        }
        if !self.insecure && self.security.secrets.is_empty() {
            if !is_loopback(&self.receiver.address) {
                return bad(
                    "receiver.address",
                    format!(
                        "{} is not a loopback address: set a cluster secret (traffic is then \
                         encrypted), or insecure = true for a trusted network",
                        self.receiver.address
                    ),
                );
            }
            if m.static_members.is_empty() && !is_loopback(&m.bind) {
                return bad(
                    "membership.bind",
                    format!(
                        "{} is not a loopback address: set a cluster secret, or insecure = true",
                        m.bind
                    ),
                );
            }
        }
        Ok(())
    }

    /// The interceptor config with this name, if configured.
    pub fn interceptor(&self, name: &str) -> Option<&InterceptorConfig> {
        self.interceptors.iter().find(|i| i.name == name)
    }
}

#[cfg(test)]
pub(crate) fn test_config_json(mcast_port: u16) -> String {
    format!(
        r#"{{"name":"t","send_options":2,"insecure":false,"worker_threads":2,"event_queue_size":1024,
        "membership":{{"address":"228.0.0.4","port":{mcast_port},"frequency_ms":50,"drop_time_ms":500,
          "bind":"127.0.0.1","ttl":0,"domain":[],"payload":[],"local_loopback_disabled":false,"static_members":[]}},
        "receiver":{{"address":"127.0.0.1","port":0,"auto_bind":1,"max_frame":16777216,"max_connections":1024}},
        "sender":{{"timeout_ms":3000,"connect_timeout_ms":1000,"max_retries":1,"keepalive":true}},
        "interceptors":[{{"name":"dispatch","options":{{}}}},{{"name":"failure_detector","options":{{}}}}]}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let cfg = CoreConfig::from_json(&test_config_json(45999)).expect("valid");
        assert_eq!(cfg.membership.port, 45999);
        assert_eq!(cfg.interceptors.len(), 2);
    }

    #[test]
    fn rejects_non_loopback_without_insecure() {
        let json = test_config_json(45999).replace(
            r#""address":"127.0.0.1","port":0"#,
            r#""address":"10.1.2.3","port":0"#,
        );
        let err = CoreConfig::from_json(&json).unwrap_err().to_string();
        assert!(err.starts_with("receiver.address"), "{err}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let json = test_config_json(45999).replace(r#""name":"t""#, r#""name":"t","bogus":1"#);
        assert!(CoreConfig::from_json(&json).is_err());
    }
}
