#if canImport(Glibc)
import Glibc
#endif

/// Ports on this machine for servers a process starts (tests, benchmarks).
public enum LocalPort {
    /// A port nothing listens on, below Linux's ephemeral range (32768 and up), so that no outgoing
    /// connection takes it between this check and the child process binding it. `count` ports in a
    /// row when a process wants consecutive ones.
    public static func free(count: Int = 1) -> Int {
        while true {
            let first = Int.random(in: 20_000...(32_000 - count))
            if (first..<(first + count)).allSatisfy(isFree) { return first }
        }
    }

    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = INADDR_ANY
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
