import Dispatch

/// Median and percentiles of a list of measurements (timings, latencies).
public struct Percentiles: Sendable {
    public let sorted: [Double]

    public init<S: Sequence>(_ values: S) where S.Element == Double { sorted = values.sorted() }

    /// The nearest-rank percentile (p in 0...100); NaN when empty.
    public func at(_ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
        return sorted[rank]
    }

    /// The middle value (the mean of the two middle values for an even count); NaN when empty.
    public var median: Double {
        guard !sorted.isEmpty else { return .nan }
        let n = sorted.count
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

extension Sequence where Element == Double {
    public var median: Double { Percentiles(self).median }
    public func percentile(_ p: Double) -> Double { Percentiles(self).at(p) }
}

extension Sequence where Element: Hashable {
    /// The distinct elements, in order of first appearance.
    public var uniqueInOrder: [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}

/// Human-readable byte counts (decimal units, one decimal): "2.1 GB".
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f ", value) + units[unit]
}

/// Monotonic seconds (for host-side timing).
public func monotonicSeconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) / 1e9
}
