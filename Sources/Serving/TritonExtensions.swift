import DLRM
import Foundation

/// The Triton/KServe extensions that the ecosystem's tools call (perf_analyzer, model analyzers,
/// dashboards): model configuration, statistics and the model repository. One description of
/// each, rendered as Triton's JSON (HTTP) and as its protobuf messages (gRPC, GRPCInference).
extension InferenceSchema {
    /// Triton's model configuration. `max_batch_size` is 0: Bagel's tensors have no leading batch
    /// dimension in Triton's sense (offsets hold batch + 1 entries, indices one per lookup), so every
    /// variable dimension is -1 and clients give shapes per request, as they already do.
    public func tritonConfigJSON(batching: BatchingOptions) -> [String: Any] {
        var config: [String: Any] = [
            "name": modelName, "platform": "bagel-dlrm", "backend": "bagel", "max_batch_size": 0,
            "input": inputs.map { spec in
                [
                    "name": spec.name, "data_type": "TYPE_" + spec.datatype, "dims": spec.shape, "format": "FORMAT_NONE",
                    "is_shape_tensor": false, "allow_ragged_batch": false, "optional": spec.optional,
                ] as [String: Any]
            },
            "output": outputs.map { spec in
                ["name": spec.name, "data_type": "TYPE_" + spec.datatype, "dims": spec.shape, "label_filename": ""]
            },
            "instance_group": [["name": modelName, "kind": "KIND_MODEL", "count": 1]],
            "model_transaction_policy": ["decoupled": false],
            "response_cache": ["enable": false],
            "parameters": [
                "dense_features": ["string_value": String(config.denseFeatures)],
                "tables": ["string_value": String(config.tables.count)],
                "max_samples_per_request": ["string_value": String(batching.maxBatch)],
            ],
        ]
        if batching.enabled {
            config["dynamic_batching"] = [
                "preferred_batch_size": [batching.maxBatch],
                "max_queue_delay_microseconds": Int(batching.maxDelay.nanoseconds / 1000),
            ]
        }
        return config
    }

    public func tritonConfig(batching: BatchingOptions) -> Inference_ModelConfig {
        func dataType(_ name: String) -> Inference_DataType {
            switch name {
            case "FP32": return .typeFp32
            case "INT32": return .typeInt32
            case "INT64": return .typeInt64
            default: return .typeInvalid
            }
        }
        return .with { c in
            c.name = modelName
            c.platform = "bagel-dlrm"
            c.backend = "bagel"
            c.maxBatchSize = 0
            c.input = inputs.map { spec in
                .with {
                    $0.name = spec.name
                    $0.dataType = dataType(spec.datatype)
                    $0.dims = spec.shape.map(Int64.init)
                    $0.optional = spec.optional
                }
            }
            c.output = outputs.map { spec in
                .with {
                    $0.name = spec.name
                    $0.dataType = dataType(spec.datatype)
                    $0.dims = spec.shape.map(Int64.init)
                }
            }
            c.instanceGroup = [.with {
                $0.name = modelName
                $0.kind = .model
                $0.count = 1
            }]
            if batching.enabled {
                c.dynamicBatching = .with {
                    $0.preferredBatchSize = [Int32(clamping: batching.maxBatch)]
                    $0.maxQueueDelayMicroseconds = UInt64(max(0, batching.maxDelay.nanoseconds / 1000))
                }
            }
            c.modelTransactionPolicy = .with { $0.decoupled = false }
            c.responseCache = .with { $0.enable = false }
        }
    }
}

extension ModelVersion {
    /// Triton's statistics of one model version, as its HTTP JSON.
    func tritonStatisticsJSON(modelName: String) -> [String: Any] {
        let s = statistics.snapshot
        func duration(_ count: Int, _ ns: Int64) -> [String: Any] { ["count": count, "ns": ns] }
        return [
            "name": modelName, "version": version, "last_inference": s.lastInferenceMilliseconds,
            "inference_count": s.inferenceCount, "execution_count": s.executionCount,
            "inference_stats": [
                "success": duration(s.successCount, s.successNanoseconds),
                "fail": duration(s.failureCount, s.failureNanoseconds),
                "queue": duration(s.queueCount, s.queueNanoseconds),
                // Bagel decodes inputs before queueing and encodes outputs after: only the engine time is split out.
                "compute_input": duration(s.computeCount, 0),
                "compute_infer": duration(s.computeCount, s.computeNanoseconds),
                "compute_output": duration(s.computeCount, 0),
                "cache_hit": duration(0, 0), "cache_miss": duration(0, 0),
            ],
            "batch_stats": [] as [Any],
        ]
    }

    func tritonStatistics(modelName: String) -> Inference_ModelStatistics {
        let s = statistics.snapshot
        func duration(_ count: Int, _ ns: Int64) -> Inference_StatisticDuration {
            .with {
                $0.count = UInt64(count)
                $0.ns = UInt64(max(0, ns))
            }
        }
        return .with {
            $0.name = modelName
            $0.version = version
            $0.lastInference = UInt64(s.lastInferenceMilliseconds)
            $0.inferenceCount = UInt64(s.inferenceCount)
            $0.executionCount = UInt64(s.executionCount)
            $0.inferenceStats = .with {
                $0.success = duration(s.successCount, s.successNanoseconds)
                $0.fail = duration(s.failureCount, s.failureNanoseconds)
                $0.queue = duration(s.queueCount, s.queueNanoseconds)
                $0.computeInput = duration(s.computeCount, 0)
                $0.computeInfer = duration(s.computeCount, s.computeNanoseconds)
                $0.computeOutput = duration(s.computeCount, 0)
            }
        }
    }
}

extension InferenceService {
    /// The versions a statistics request names: one, or every loaded one.
    func statisticsVersions(model: String?, version: String?) throws -> [ModelVersion] {
        guard let model, !model.isEmpty else { return loadedVersions }
        if let version, !version.isEmpty { return [try resolve(model, version: version, acquire: false)] }
        try checkModelName(model)
        return loadedVersions
    }

    /// Triton's repository index: the model, its current version and state.
    public var repositoryIndex: [(name: String, version: String, state: String, reason: String)] {
        if let current { return [(modelName, current.version, "READY", "")] }
        return [(modelName, latestVersion, "UNAVAILABLE", "unloaded")]
    }
}
