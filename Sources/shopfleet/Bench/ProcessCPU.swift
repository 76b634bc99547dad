import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// CPU time used on this machine, from `/proc`: the whole machine (`/proc/stat`) and each process
/// group (the sum of `utime + stime` of its processes). Two snapshots around a phase give what
/// the phase cost; divided by the orders it completed, the CPU per order by group.
///
/// Groups: `rabbitmq` (the Erlang VM and its helpers), `postgres`, `redis`, `worker:<role>` (a
/// `shopfleet worker <role>` process), `edge`, `sandbox` (the payments sandbox), `mail-sink`
/// (aiosmtpd), `bench` (this process) and `other`. The same names as `bench/peers`, which adds
/// its own (`temporal-server`, `peer-worker`, `driver`).
struct CPUSnapshot: Sendable {
    var machine: Double
    var groups: [String: Double]
    /// Per process, so that a process that started or ended between two snapshots counts only
    /// what it used while both saw it, or from its start.
    var processes: [Int32: (group: String, seconds: Double)]

    static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

    static func take() -> CPUSnapshot {
        var processes: [Int32: (group: String, seconds: Double)] = [:]
        let me = getpid()
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") {
            for entry in entries {
                guard let pid = Int32(entry), let stat = read("/proc/\(entry)/stat"),
                      let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { continue }
                let name = String(stat[stat.index(after: open)..<close])
                let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
                guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
                let group = pid == me ? "bench" : classify(name: name, argv: arguments(of: entry))
                processes[pid] = (group, (user + system) / ticks)
            }
        }
        var groups: [String: Double] = [:]
        for (_, process) in processes { groups[process.group, default: 0] += process.seconds }
        return CPUSnapshot(machine: machineSeconds(), groups: groups, processes: processes)
    }

    /// CPU seconds by group used between `earlier` and this snapshot; `machine` is every core's
    /// busy time.
    func since(_ earlier: CPUSnapshot) -> (machine: Double, groups: [String: Double]) {
        var groups: [String: Double] = [:]
        for (pid, process) in processes {
            let before = earlier.processes[pid].map { $0.group == process.group ? $0.seconds : 0 } ?? 0
            groups[process.group, default: 0] += max(0, process.seconds - before)
        }
        return (machine - earlier.machine, groups.filter { $0.value > 0 })
    }

    /// Busy seconds of every core: user, nice, system, irq, softirq, steal (not idle or iowait).
    static func machineSeconds() -> Double {
        guard let stat = read("/proc/stat"), let line = stat.split(separator: "\n").first else { return 0 }
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 8 else { return 0 }
        return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]) / ticks
    }

    static func classify(name: String, argv: [String]) -> String {
        if name.hasPrefix("beam") || name == "erl_child_setup" || name == "epmd" || name == "inet_gethost" { return "rabbitmq" }
        if name.hasPrefix("postgres") || name == "postmaster" { return "postgres" }
        if name.hasPrefix("redis-server") { return "redis" }
        if let program = argv.first {
            // A worker execs into `shopfleet-worker <role> …` (or `-ext`), keeping its pid.
            if program.hasSuffix("shopfleet-worker") || program.hasSuffix("shopfleet-worker-ext") {
                return argv.count > 1 ? "worker:\(argv[1])" : "worker"
            }
            if program.hasSuffix("/shopfleet") || program == "shopfleet" {
                switch argv.dropFirst().first {
                case "worker": return argv.count > 2 ? "worker:\(argv[2])" : "worker"
                case "edge": return "edge"
                case "payments-sandbox": return "sandbox"
                default: return "shopfleet"
                }
            }
        }
        if argv.contains("aiosmtpd") { return "mail-sink" }
        return "other"
    }

    private static func arguments(of pid: String) -> [String] {
        guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
        return raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    private static func read(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }
}
