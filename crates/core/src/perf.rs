//! What a perf run (libp2p's `/perf/1.0.0`, see `tabmesh_node::perf`) measured, as the tab's
//! `window.tabmesh.perf` returns it and the benchmark reads it.

use serde::{Deserialize, Serialize};

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfReport {
    /// The peer.
    pub peer_id: String,
    /// `"direct"` or `"relayed"`: the connection the node had to the peer when the run started.
    pub connection: crate::peers::ConnectionKind,
    /// Bytes sent.
    pub upload_bytes: u64,
    /// Milliseconds from the first byte sent to the server's answer.
    pub upload_ms: f64,
    /// Bytes received.
    pub download_bytes: u64,
    /// Milliseconds from the end of the upload to the last byte received.
    pub download_ms: f64,
}

impl PerfReport {
    /// Upload throughput in MB/s (10^6 bytes per second).
    pub fn upload_mb_per_s(&self) -> f64 {
        mb_per_s(self.upload_bytes, self.upload_ms)
    }

    /// Download throughput in MB/s.
    pub fn download_mb_per_s(&self) -> f64 {
        mb_per_s(self.download_bytes, self.download_ms)
    }
}

fn mb_per_s(bytes: u64, ms: f64) -> f64 {
    if ms <= 0.0 {
        return 0.0;
    }
    bytes as f64 / 1e6 / (ms / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_in_megabytes_per_second() {
        let report = PerfReport {
            peer_id: String::new(),
            connection: crate::peers::ConnectionKind::Direct,
            upload_bytes: 8_000_000,
            upload_ms: 1000.0,
            download_bytes: 4_000_000,
            download_ms: 500.0,
        };
        assert!((report.upload_mb_per_s() - 8.0).abs() < 1e-9);
        assert!((report.download_mb_per_s() - 8.0).abs() < 1e-9);
    }
}
