// The autotuner's typed core, independent of any GPU: a kernel family that offers knobs
// implements TunableFamily (its candidate attribute sets for a node, and how to time one on a
// TuneDevice); tune_graph times every candidate of every tunable node on the node's own shapes,
// keeps the fastest whose output matches the default configuration's, caches the choice by the
// family's key and the device name (TuneCache, a JSON file), and writes it into the node's
// attributes, so the final IR records it and `--from-ir` of an edited dump recompiles it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/families/family.h"
#include "ir/attributes.h"
#include "ir/graph.h"

namespace kiln {

class GpuDevice;
struct GpuKernel;

/// One configuration: the node attributes it sets (every knob of its family).
struct Candidate {
  std::string label;  // "kv16 w4 st2 lse blocks528"
  Attributes attrs;
};

/// One timed run of a candidate: microseconds (summed over the family's workloads) and the
/// outputs, compared against the default candidate's.
struct Trial {
  double us = 0;
  std::vector<float> output;
};

/// What tuning one (family key, device) decided.
struct TuneResult {
  std::string family;
  std::string key;  // TunableFamily::key
  std::string device;
  Attributes chosen;
  std::string label;
  double us = 0;          // the chosen candidate
  double default_us = 0;  // candidate 0
  int tried = 0;
  int rejected = 0;  // failed to build / run, or failed the numeric check
  bool cached = false;
};

/// The GPU as the families see it. Kernels are compiled ahead (prepare, in parallel) and then
/// looked up by spec key.
class TuneDevice {
 public:
  virtual ~TuneDevice() = default;
  virtual std::string name() const = 0;
  /// Compiles (through the kernel cache) and loads every spec not yet loaded.
  virtual absl::Status prepare(const std::vector<std::shared_ptr<const KernelSpec>>& specs) = 0;
  /// A prepared kernel; NotFound when prepare did not get it.
  virtual absl::StatusOr<const GpuKernel*> kernel(const std::string& key) = 0;
  /// The driver device (nullptr for a device that runs nothing, as in the CPU tests).
  virtual GpuDevice* gpu() = 0;
};

class TunableFamily {
 public:
  virtual ~TunableFamily() = default;
  virtual std::string name() const = 0;
  virtual bool applies(const Node& node) const = 0;
  /// What the choice depends on (op, shapes, dtype): nodes with equal keys share one tuning.
  virtual std::string key(const Node& node) const = 0;
  /// The configurations to try; [0] is the default (what the node gets without tuning) and the
  /// numeric reference.
  virtual absl::StatusOr<std::vector<Candidate>> candidates(const Node& node) const = 0;
  /// The kernels candidate `c` launches (compiled ahead of the trials, all candidates at once).
  virtual absl::StatusOr<std::vector<std::shared_ptr<const KernelSpec>>> specs(
      const Node& node, const Candidate& c) const = 0;
  virtual absl::StatusOr<Trial> run(const Node& node, const Candidate& c,
                                    TuneDevice& device) const = 0;
  /// |candidate - default| <= tolerance * (1 + |default|) for every output element.
  virtual double tolerance(const Node& node) const = 0;
};

/// Choices by "<device>|<key>", read from and written to a JSON file.
class TuneCache {
 public:
  /// An absent file is an empty cache; an unreadable or malformed one an error naming it.
  static absl::StatusOr<TuneCache> load(const std::string& path);
  absl::Status save() const;

  const TuneResult* find(const std::string& device, const std::string& key) const;
  void put(const TuneResult& r);
  const std::string& path() const { return path_; }
  size_t size() const { return entries_.size(); }

 private:
  std::string path_;
  std::map<std::string, TuneResult> entries_;
};

/// "<kernel cache dir>/tune.json".
std::string tune_cache_path(const std::string& kernel_cache_dir);

/// Tunes every node some family applies to (the first that does), in program order; nodes
/// sharing a key are timed once. Candidates that fail to build, run or match are skipped; when
/// even the default fails, that error is returned.
absl::StatusOr<std::vector<TuneResult>> tune_graph(
    Graph& graph, const std::vector<const TunableFamily*>& families, TuneDevice& device,
    TuneCache& cache);

/// One line per result: "flash_attention decode <key>: <label> 41.2 us (default 55.0 us, 1.34x),
/// 24 tried, 2 rejected".
std::string tune_report(const std::vector<TuneResult>& results);

}  // namespace kiln
