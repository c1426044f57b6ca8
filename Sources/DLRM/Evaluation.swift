import Foundation

/// Quality of click probabilities against 0/1 labels.
public struct EvaluationMetrics: Sendable, Equatable {
    public let count: Int
    /// Mean binary cross-entropy, probabilities clipped to [1e-7, 1 − 1e-7].
    public let logLoss: Double
    /// Area under the ROC curve (ties share their average rank); nil when only one class is present.
    public let auc: Double?
    /// Share of samples where (p ≥ 0.5) equals the label.
    public let accuracy: Double

    public init(probabilities: [Float], labels: [Float]) {
        precondition(probabilities.count == labels.count)
        count = labels.count
        let eps = 1e-7
        var loss = 0.0
        var correct = 0
        for (p, y) in zip(probabilities, labels) {
            let q = min(max(Double(p), eps), 1 - eps)
            let positive = y >= 0.5
            loss -= positive ? log(q) : log(1 - q)
            if (p >= 0.5) == positive { correct += 1 }
        }
        logLoss = count == 0 ? 0 : loss / Double(count)
        accuracy = count == 0 ? 0 : Double(correct) / Double(count)
        auc = Self.areaUnderROC(probabilities: probabilities, labels: labels)
    }

    /// Mann–Whitney form: (Σ ranks of positives − P(P+1)/2) / (P·N), with average ranks for ties.
    static func areaUnderROC(probabilities: [Float], labels: [Float]) -> Double? {
        let order = probabilities.indices.sorted { probabilities[$0] < probabilities[$1] }
        var rankSum = 0.0
        var positives = 0
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && probabilities[order[j + 1]] == probabilities[order[i]] { j += 1 }
            let averageRank = Double(i + j + 2) / 2  // ranks are 1-based
            for k in i...j where labels[order[k]] >= 0.5 {
                rankSum += averageRank
                positives += 1
            }
            i = j + 1
        }
        let negatives = order.count - positives
        guard positives > 0, negatives > 0 else { return nil }
        return (rankSum - Double(positives) * Double(positives + 1) / 2) / (Double(positives) * Double(negatives))
    }
}
