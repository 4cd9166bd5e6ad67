//! A cluster member as this process sees it, built from its Tribes member packet.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use crate::wire::member::{MemberPacket, SHUTDOWN_COMMAND};
use crate::wire::WireError;

/// Identity of a member, as Tribes defines it: host bytes + TCP port + 16-byte unique id.
/// Alive time, domain and payload are not part of it; a restarted process is a new member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberKey {
    /// Raw host address bytes (4 for IPv4, 16 for IPv6).
    pub host: Vec<u8>,
    /// TCP replication port.
    pub port: i32,
    /// Random per-process id.
    pub unique_id: [u8; 16],
}

/// An immutable snapshot of a member. Shared as `Arc<Member>`.
#[derive(Clone)]
pub struct Member {
    /// The decoded packet fields.
    pub packet: MemberPacket,
    /// The packet as encoded bytes (alive time as advertised), used as a message's sender address.
    pub encoded: Arc<[u8]>,
    /// SHA-256 of `encoded`, computed on first use: encrypted messages bind their sender's whole
    /// packet through it, and a receiver reuses one `Member` for a connection's messages.
    digest: OnceLock<[u8; 32]>,
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.packet == other.packet && self.encoded == other.encoded
    }
}

impl Eq for Member {}

impl Member {
    /// Builds a member from a decoded packet.
    pub fn from_packet(packet: MemberPacket) -> Self {
        let mut buf = Vec::with_capacity(packet.encoded_len());
        packet.encode(&mut buf);
        Member {
            packet,
            encoded: buf.into(),
            digest: OnceLock::new(),
        }
    }

    /// Decodes a member from packet bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let packet = MemberPacket::decode(bytes)?;
        Ok(Member {
            encoded: bytes[..packet.encoded_len().min(bytes.len())].into(),
            packet,
            digest: OnceLock::new(),
        })
    }

    /// SHA-256 of the encoded packet (computed once per `Member`).
    pub fn digest(&self) -> &[u8; 32] {
        self.digest.get_or_init(|| {
            use sha2::Digest;
            sha2::Sha256::digest(&self.encoded[..]).into()
        })
    }

    /// The identity triple.
    pub fn key(&self) -> MemberKey {
        MemberKey {
            host: self.packet.host.clone(),
            port: self.packet.port,
            unique_id: self.packet.unique_id,
        }
    }

    /// True when this member's identity equals `key`, without allocating.
    pub fn has_key(&self, key: &MemberKey) -> bool {
        self.packet.port == key.port
            && self.packet.unique_id == key.unique_id
            && self.packet.host == key.host
    }

    /// True when both are the same member (same identity).
    pub fn same_as(&self, other: &Member) -> bool {
        self.packet.port == other.packet.port
            && self.packet.unique_id == other.packet.unique_id
            && self.packet.host == other.packet.host
    }

    /// The host as an IP address, when the host bytes are 4 or 16 long.
    pub fn ip(&self) -> Option<IpAddr> {
        host_ip(&self.packet.host)
    }

    /// The host as text: the IP, or hex when the bytes are not an address.
    pub fn host_string(&self) -> String {
        match self.ip() {
            Some(ip) => ip.to_string(),
            None => self
                .packet
                .host
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// The TCP port as u16, when valid.
    pub fn tcp_port(&self) -> Option<u16> {
        u16::try_from(self.packet.port).ok().filter(|p| *p != 0)
    }

    /// Tomcat's member name: `tcp://<ip>:<port>`.
    pub fn name(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(ip)) => format!("tcp://[{ip}]:{}", self.packet.port),
            _ => format!("tcp://{}:{}", self.host_string(), self.packet.port),
        }
    }

    /// The socket address to connect to, if the host and port are usable.
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        Some(std::net::SocketAddr::new(self.ip()?, self.tcp_port()?))
    }

    /// True when the packet carries Tribes' shutdown command (`BABY-ALEX`).
    pub fn is_shutdown(&self) -> bool {
        self.packet.command == SHUTDOWN_COMMAND
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name())
            .field("alive_ms", &self.packet.alive_ms)
            .finish()
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Host bytes → IP address (4 or 16 bytes), else None.
pub fn host_ip(host: &[u8]) -> Option<IpAddr> {
    match host.len() {
        4 => {
            let b: [u8; 4] = host.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        16 => {
            let b: [u8; 16] = host.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// IP address → host bytes, as Java's `InetAddress.getAddress()` gives them.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A fresh 16-byte unique id from the OS CSPRNG, with UUID version-4 bits as Tribes sets them.
pub fn new_unique_id() -> [u8; 16] {
    let mut id: [u8; 16] = rand::random();
    id[6] = (id[6] & 0x0F) | 0x40;
    id[8] = (id[8] & 0x3F) | 0x80;
    id
}
