#if canImport(Glibc)
import Glibc
#endif
import Synchronization

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

    /// A free port held by a bound socket that does not listen: no other process (nor
    /// ``free(count:)``) takes it, and a connection to it is refused, as by a server that is down.
    /// ``Held/release()`` closes the socket, just before a server is started there.
    /// (Never with `SO_REUSEADDR`: without it, no other socket can bind the port meanwhile. Closed
    /// on exec, so no child process started meanwhile keeps it.)
    public static func hold() -> Held {
        for _ in 0..<1000 {
            let port = Int.random(in: 20_000...32_000)
            let fd = bound(port)
            if fd >= 0 { return Held(port: port, fd: fd) }
        }
        preconditionFailure("no port between 20000 and 32000 could be bound in 1000 tries")
    }

    /// A port ``hold()`` keeps.
    public final class Held: Sendable {
        public let port: Int
        private let fd: Mutex<Int32>
        init(port: Int, fd: Int32) {
            self.port = port
            self.fd = Mutex(fd)
        }
        /// Closes the socket (once; later calls do nothing).
        public func release() {
            fd.withLock { fd in
                if fd >= 0 { close(fd) }
                fd = -1
            }
        }
        deinit { release() }
    }

    /// True when something accepts connections on 127.0.0.1:`port`.
    public static func accepts(_ port: Int) -> Bool {
        let fd = connect(port)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }

    /// A TCP socket connected to 127.0.0.1:`port`, or -1. The caller closes it.
    public static func connect(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        if withAddress(port, inet_addr("127.0.0.1"), { Glibc.connect(fd, $0, $1) }) == 0 { return fd }
        close(fd)
        return -1
    }

    static func isFree(_ port: Int) -> Bool {
        let fd = bound(port)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }

    /// A socket bound to `port` on every address, not listening (closed on exec), or -1.
    private static func bound(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return -1 }
        if withAddress(port, INADDR_ANY, { bind(fd, $0, $1) }) == 0 { return fd }
        close(fd)
        return -1
    }

    /// Calls `body` with an IPv4 socket address (`host`, network order) and its length.
    private static func withAddress(_ port: Int, _ host: in_addr_t,
                                    _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = host
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
}
