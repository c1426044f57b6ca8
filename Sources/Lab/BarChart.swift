import Core

/// The JSON `bench embedding --json` writes (and Benchmarks/compare_embedding.py reads).
public struct EmbeddingBenchDocument: Codable, Sendable {
    public let gpu: String
    public let copyTerabytesPerSecond: Double
    public let workload: EmbeddingWorkload
    public let results: [EmbeddingBenchResult]

    public init(gpu: String, copyTerabytesPerSecond: Double, workload: EmbeddingWorkload, results: [EmbeddingBenchResult]) {
        self.gpu = gpu
        self.copyTerabytesPerSecond = copyTerabytesPerSecond
        self.workload = workload
        self.results = results
    }
}

/// A grouped bar chart in plain SVG: datasets along x, one bar per variant.
public enum BarChart {
    public static func svg(results: [EmbeddingBenchResult], title: String) -> String {
        let datasets = results.map(\.dataset).uniqueInOrder
        let variants = results.map(\.variant).uniqueInOrder
        let maximum = max(results.map(\.microseconds).max() ?? 1, 1)
        let groupWidth = Double(variants.count * 14 + 30)
        let width = 80 + Double(datasets.count) * groupWidth + 180
        let height = 360.0
        let plotHeight = 260.0
        let colors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                      "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c"]
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"10\" y=\"18\" font-size=\"13\">\(escape(title))</text>\n"
        svg += "<line x1=\"60\" y1=\"40\" x2=\"60\" y2=\"\(40 + plotHeight)\" stroke=\"black\"/>\n"
        for tick in 0...4 {
            let value = maximum * Double(tick) / 4
            let y = 40 + plotHeight - plotHeight * Double(tick) / 4
            svg += "<text x=\"55\" y=\"\(y + 4)\" text-anchor=\"end\">\(Int(value))</text>\n"
            svg += "<line x1=\"60\" y1=\"\(y)\" x2=\"\(width - 180)\" y2=\"\(y)\" stroke=\"#ddd\"/>\n"
        }
        for (d, dataset) in datasets.enumerated() {
            let x0 = 70 + Double(d) * groupWidth
            for (v, variant) in variants.enumerated() {
                guard let r = results.first(where: { $0.dataset == dataset && $0.variant == variant }) else { continue }
                let h = plotHeight * r.microseconds / maximum
                svg += "<rect x=\"\(x0 + Double(v) * 14)\" y=\"\(40 + plotHeight - h)\" width=\"12\" height=\"\(h)\" fill=\"\(colors[v % colors.count])\"><title>\(escape(variant)) on \(dataset): \(String(format: "%.1f", r.microseconds)) µs</title></rect>\n"
            }
            svg += "<text x=\"\(x0 + Double(variants.count) * 7)\" y=\"\(40 + plotHeight + 16)\" text-anchor=\"middle\">\(escape(dataset))</text>\n"
        }
        for (v, variant) in variants.enumerated() {
            let y = 50 + Double(v) * 16
            svg += "<rect x=\"\(width - 170)\" y=\"\(y - 9)\" width=\"10\" height=\"10\" fill=\"\(colors[v % colors.count])\"/>"
            svg += "<text x=\"\(width - 155)\" y=\"\(y)\">\(escape(variant))</text>\n"
        }
        return svg + "</svg>\n"
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}
