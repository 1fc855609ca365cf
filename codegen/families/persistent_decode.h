// Family persistent_decode (kernels/persistent_decode.cuh): issue 13's persistent decode kernel.
// `kiln compile --persistent` adds it after lowering: the launches a small-batch decode step runs
// (embedding to LM head; sampling stays its own launch) become the stages of one kernel whose
// resident blocks take their blocks as tasks, each stage after the one before it has finished
// (dependency counters in global memory instead of kernel boundaries), so no launch gap separates
// two ops and a GEMV task fetches its weights into L2 while it waits. The stages are the same
// kernel templates with the same grids and arguments as the launches they replace (each block of
// a launch is one task, with that launch's coordinates), so the persistent step computes the same
// bits as the CUDA-graph step: the tests compare the two token for token.
//
// The generated source: one namespace per distinct launch (a "kind": kernel, grid, scalar
// arguments), holding the template's config and a `run` that unpacks the launch's pointer
// arguments from a table the runtime writes at load (a PlanWorkspace with addresses) and takes its
// integer arguments from the entry's own `int` parameters (the launch expressions of every kind,
// evaluated per step as any launch's are); the stage -> kind table is baked in.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "codegen/families/family.h"
#include "codegen/families/gemv.h"

namespace kiln {

/// One distinct launch among the stages: a kernel with its grid, block and scalar arguments.
struct PersistentKind {
  std::shared_ptr<const KernelSpec> spec;
  std::array<std::string, 3> grid;  ///< launch expressions
  int64_t threads = 0;
  int64_t dynamic_shared_bytes = 0;
  /// The member launch's arguments by entry parameter: pointers are the stage's own (from the
  /// address table, in entry order), ints name an entry parameter of the persistent kernel
  /// (`int_params`' index), floats are baked.
  std::vector<LaunchArg> args;
};

struct PersistentDecodeSpec final : KernelSpec {
  DType dtype = DType::kBF16;            ///< the model's activations (for the key)
  std::vector<PersistentKind> kinds;
  std::vector<int> stage_kinds;          ///< per stage, in order
  std::vector<std::string> int_params;   ///< the entry's int parameters e0, e1, ...: expressions
  int64_t threads = 0;                   ///< the block: the widest kind's
  int64_t dynamic_shared_bytes = 0;      ///< the largest kind's
  /// __launch_bounds__' minimum blocks per SM: 2 caps registers at 128 (more loads in flight per
  /// SM, at the cost of spills in the widest kinds); the runtime takes what fits either way.
  int64_t blocks_per_sm = 1;

  KernelFamily family() const override { return KernelFamily::kPersistentDecode; }
  /// persistent_decode_<dt>_s<stages>_k<kinds>_t<threads>_b<blocks per SM>_h<hash>
  std::string key() const override;
  /// ptrs (the address table), counters (stages + 1 zeroed ints), then e0, e1, ...
  std::vector<EntryDecl> entry() const override;
  /// Not a single template: source() assembles the kinds' templates.
  absl::StatusOr<KernelTemplate> kernel_template() const override;
  absl::StatusOr<std::string> source() const override;
  /// Pointer arguments of kind `k`'s launch (its slots in a stage's part of the address table).
  int pointer_count(int k) const;
};

struct PersistentOptions {
  /// Decode steps with at most this many sequences run the persistent kernel. At most
  /// kGemvMaxRows: every matmul of those steps must be a GEMV (a task), not a cuBLASLt GEMM.
  int64_t max_sequences = kGemvMaxRows;
  /// PersistentDecodeSpec::blocks_per_sm.
  int64_t blocks_per_sm = 1;
};

/// Adds the persistent decode kernel to `lowered`: its spec, its launch (StepKind::kDecode,
/// bounded to S <= max_sequences), the address table and counters workspaces, and
/// lowered.persistent naming the launch and its stages. Stages are the launches every decode step
/// with S <= max_sequences runs, except those of no graph node (sampling). Fails, naming the op,
/// when such a step runs a cuBLASLt GEMM (compile with every matmul on the GEMV path), or a launch
/// whose rule the kernel cannot take as tasks (a block that is not one-dimensional and constant,
/// or that runs only for some S within the bound).
absl::Status add_persistent_decode(LoweredGraph& lowered, const PersistentOptions& options);

}  // namespace kiln
