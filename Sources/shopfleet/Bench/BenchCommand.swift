import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks, each figure beside a baseline measured in the same run.",
        subcommands: [BenchClientsCommand.self, BenchWorkerCommand.self, BenchCheckoutCommand.self, BenchEdgeCommand.self])
}

/// One measured figure and its baseline. `--json` prints these fields exactly.
struct BenchRow: Encodable, Sendable {
    var metric: String
    var unit: String
    var value: Double
    var baseline: Double
    var ratio: Double
    /// What the baseline was (for the table only).
    var baselineName: String

    enum CodingKeys: String, CodingKey { case metric, unit, value, baseline, ratio }

    init(metric: String, unit: String, value: Double, baseline: Double, baselineName: String) {
        self.metric = metric
        self.unit = unit
        self.value = value
        self.baseline = baseline
        self.ratio = baseline > 0 ? value / baseline : 0
        self.baselineName = baselineName
    }
}

enum BenchOutput {
    static func print(_ rows: [BenchRow], json: Bool) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            for row in rows {
                Swift.print(String(decoding: try encoder.encode(row), as: UTF8.self))
            }
            return
        }
        let header = ["metric", "unit", "shopfleet", "baseline", "ratio", "baseline is"]
        let cells = rows.map { row in
            [row.metric, row.unit, format(row.value), format(row.baseline), String(format2: row.ratio), row.baselineName]
        }
        let widths = header.indices.map { column in ([header] + cells).map { $0[column].count }.max()! }
        func line(_ values: [String]) -> String {
            "| " + values.enumerated().map { $0.element.padding(toLength: widths[$0.offset]) }.joined(separator: " | ") + " |"
        }
        Swift.print(line(header))
        Swift.print("|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|")
        for row in cells { Swift.print(line(row)) }
    }

    static func format(_ value: Double) -> String { String(Int(value.rounded())) }
}

extension String {
    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        let fraction = hundredths % 100
        self = "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    func padding(toLength length: Int) -> String {
        count >= length ? self : self + String(repeating: " ", count: length - count)
    }
}

/// CPU time (user and system, in seconds) from `getrusage(2)`.
enum CPUTime {
    /// All threads of this process.
    static func process() -> Double { seconds(RUSAGE_SELF) }
    /// Children this process has waited for (a baseline tool, once it exited).
    static func waitedChildren() -> Double { seconds(RUSAGE_CHILDREN) }

    private static func seconds(_ who: __rusage_who) -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(who.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1_000_000
    }
}
