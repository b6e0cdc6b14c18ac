//! `[enter].ports` parsed into a [`PortSpec`], and what a private network puts in the jail: its fixed
//! addresses, /etc/resolv.conf and /etc/hosts.

use std::net::IpAddr;

use super::PortSpec;

/// The private network's jail address, its gateway and the resolver address pasta forwards to
/// the host's resolver: fixed and private (slirp's), so the jail never shares the host's own
/// address.
pub const JAIL_ADDRESS: &str = "10.0.2.100";
pub const GATEWAY: &str = "10.0.2.2";
pub const RESOLVER: &str = "10.0.2.3";

/// The jail's `/etc/resolv.conf` under a private network: pasta's forwarding resolver, or
/// none when the jail may not connect out.
pub fn resolv_conf(egress: bool) -> String {
    if egress {
        format!("# written by jailprov: pasta forwards this address to the host's resolver\nnameserver {RESOLVER}\n")
    } else {
        "# written by jailprov: [enter] egress = false, no resolver\n".to_owned()
    }
}

/// The jail's `/etc/hosts`: loopback names only (the host's own names stay the host's).
pub fn hosts_file() -> String {
    "# written by jailprov\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_owned()
}

/// Parses one published port; the error says what is wrong with it and the form expected.
pub(super) fn parse_port(text: &str) -> Result<PortSpec, String> {
    const FORM: &str = "expected \"[ADDRESS:]HOSTPORT:JAILPORT[/tcp|/udp]\", e.g. \"127.0.0.1:8080:80/tcp\"";
    let (rest, udp) = match text.rsplit_once('/') {
        Some((rest, "tcp")) => (rest, false),
        Some((rest, "udp")) => (rest, true),
        Some((_, other)) => return Err(format!("unknown protocol {other:?} (tcp or udp); {FORM}")),
        None => (text, false),
    };
    let Some((rest, jail_port)) = rest.rsplit_once(':') else {
        return Err(format!("no jail port; {FORM}"));
    };
    let (address, host_port) = match rest.rsplit_once(':') {
        Some((address, host_port)) => (Some(address), host_port),
        None => (None, rest),
    };
    let address = match address {
        None => None,
        Some(address) => {
            let bare = address.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(address);
            Some(bare.parse::<IpAddr>().map_err(|_| format!("{address:?} is not an IP address; {FORM}"))?)
        }
    };
    Ok(PortSpec { address, host_port: port_number(host_port)?, jail_port: port_number(jail_port)?, udp })
}

fn port_number(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port >= 1 => Ok(port),
        _ => Err(format!("port {text:?} is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_with_and_without_address_and_protocol() {
        let full = parse_port("127.0.0.1:8080:80/tcp").expect("valid");
        assert_eq!(full, PortSpec { address: Some([127, 0, 0, 1].into()), host_port: 8080, jail_port: 80, udp: false });
        let bare = parse_port("5353:53/udp").expect("valid");
        assert_eq!(bare, PortSpec { address: None, host_port: 5353, jail_port: 53, udp: true });
        let v6 = parse_port("[::1]:8443:443").expect("valid");
        assert_eq!(v6.address, Some("::1".parse().expect("an address")));
    }

    #[test]
    fn bad_ports_say_what_is_wrong() {
        assert!(parse_port("8080:0").unwrap_err().contains("\"0\" is not a number from 1 to 65535"));
        assert!(parse_port("8080:70000").unwrap_err().contains("1 to 65535"));
        assert!(parse_port("8080:80/sctp").unwrap_err().contains("unknown protocol \"sctp\""));
        assert!(parse_port("localhost:8080:80").unwrap_err().contains("not an IP address"));
        assert!(parse_port("8080").unwrap_err().contains("no jail port"));
    }
}
