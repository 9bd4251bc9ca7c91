//! Minimal CIDR containment for `destinationSubnets`.

use std::net::IpAddr;

/// True when `ip` is inside `cidr` (`10.0.0.0/8`, or a bare address).
/// An unparsable subnet contains nothing.
pub fn contains(cidr: &str, ip: IpAddr) -> bool {
    let (addr, prefix) = match cidr.split_once('/') {
        Some((addr, prefix)) => match prefix.parse::<u32>() {
            Ok(prefix) => (addr, Some(prefix)),
            Err(_) => return false,
        },
        None => (cidr, None),
    };
    let Ok(network) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (network, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let prefix = prefix.unwrap_or(32);
            if prefix > 32 {
                return false;
            }
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let prefix = prefix.unwrap_or(128);
            if prefix > 128 {
                return false;
            }
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn prefix_lengths_and_families() {
        let ip = "10.213.0.11".parse().unwrap();
        assert!(contains("10.213.0.0/16", ip));
        assert!(contains("0.0.0.0/0", ip));
        assert!(contains("10.213.0.11", ip));
        assert!(!contains("10.214.0.0/16", ip));
        assert!(!contains("fd00::/8", ip));
        assert!(!contains("10.0.0.0/40", ip));
        assert!(contains("fd00::/8", "fd00::1".parse().unwrap()));
    }
}
