// Backend: one interface, two implementations (runtime/reference/ interprets the plan's IR on the
// CPU; runtime/cuda/ launches the plan's kernels and GEMMs). A backend owns the weights, the
// activation memory and the KV *storage*; the engine owns the page tables (runtime/kv/) and
// hands the backend each step's typed inputs. Backends know no engine; the engine knows no
// backend beyond this header.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "plan/plan.h"
#include "runtime/kv/page_copy.h"
#include "runtime/step_inputs.h"

namespace kiln {

/// The bytes of a plan's blob `index` (cubins, packed weights), from a .kplan file or a plan built
/// in memory. The bytes must outlive the backend (weights already in their param's dtype may be
/// used in place).
using PlanBlobReader = std::function<absl::StatusOr<std::string_view>(int index)>;

/// One sequence's sampling settings for one step. `uniform` is drawn by the engine from the
/// sequence's seeded stream, so both backends pick the same token from the same logits.
struct SequenceSampling {
  float temperature = 0.0f;  ///< 0 = greedy
  int32_t top_k = 0;         ///< 0 = off
  float top_p = 1.0f;        ///< 1 = off
  float uniform = 0.0f;      ///< in [0, 1)
};

struct StepRequest {
  StepInputs inputs;
  std::vector<SequenceSampling> sampling;  ///< [S], one per sequence of the step
  /// Also return the logits (tests, scoring, `--check`); otherwise only token ids leave the
  /// backend (on the GPU: only they cross PCIe).
  bool return_logits = false;
};

struct StepResult {
  std::vector<int32_t> tokens;  ///< [S] the sampled token of each sequence
  /// [S * vocab] f32, row-major, when StepRequest::return_logits.
  std::vector<float> logits;
};

/// What a backend is created with. Fields a backend does not use are ignored.
struct BackendOptions {
  /// KV pool size: an explicit page count wins, then a byte budget, then (GPU) a fraction of
  /// the free device memory after weights and activations.
  int64_t kv_pages = 0;
  double kv_cache_gb = 0;
  double gpu_memory_fraction = 0.9;
  int num_threads = 0;  ///< reference: 0 = hardware concurrency
  /// reference: keep GGUF block-quantized weights as stored (matmul and gather read the blocks)
  /// instead of converting them to the IR params' dtype (`--weights-dtype native`).
  bool native_weights = false;
  /// reference: with native block weights, quantize decode activations to 8 bits per 32 values
  /// and multiply integer codes, as llama.cpp does (faster; rounds x, so not exact).
  bool quantize_activations = false;
  /// Check every referenced weight file's xxh3 at load (a full read; sizes are always checked).
  bool verify_weights = false;
  bool debug_sync = false;  ///< cuda: synchronize and check after every launch
  bool cuda_graphs = true;  ///< cuda: capture decode steps per batch-size bucket
  /// cuda: whether the decode steps a plan's persistent decode kernel (`kiln compile
  /// --persistent`) covers run it or launch its stages one by one: kAuto times a batch-1 decode
  /// step both ways at load and keeps the faster (the load report says which and why).
  enum class Persistent : uint8_t { kAuto, kOn, kOff };
  Persistent persistent = Persistent::kAuto;
};

class Backend {
 public:
  virtual ~Backend() = default;

  /// "cpu" or "cuda".
  virtual std::string name() const = 0;
  virtual const Plan& plan() const = 0;
  /// Pages of KV storage the backend holds; the engine sizes its page tables to match.
  virtual int64_t kv_pages() const = 0;
  /// A one-line report of what was loaded (weights, arena, KV pool: pages and tokens).
  virtual std::string load_report() const = 0;

  /// Copies whole pages (every layer's K and V): the copy-on-write the page tables asked for.
  /// Runs before the next step's kernels write K/V.
  virtual absl::Status copy_kv_pages(absl::Span<const PageCopy> copies) = 0;

  /// Runs one ragged step (prefill, decode or mixed), samples one token per sequence.
  /// Errors name the input or op; a failed step leaves the KV storage of other sequences intact.
  virtual absl::StatusOr<StepResult> run_step(const StepRequest& step) = 0;
};

}  // namespace kiln
