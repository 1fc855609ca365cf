// The parts of emitted kernel sources that every family shares: C spellings of dtypes and float
// literals, the "generated" banner, and the standard instantiation (config header + an
// `extern "C" __global__` entry named by the spec's key that calls the family's template).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/families/family.h"

namespace kiln {

/// CUDA C++ spelling of an element type inside kernels ("kiln_k::bf16", "float", "int").
absl::StatusOr<std::string> kernel_type_name(DType dtype);
/// A float literal that round-trips (infinities and NaN as bit patterns).
std::string float_literal(double v);
/// The first line of every generated source: what generated it, for which kernel.
std::string generated_banner(const std::string& key);
/// "const kiln_t* q, int num_seqs, ..." for an entry.
std::string entry_signature(const std::vector<EntryDecl>& entry);

/// The standalone instantiation of a template: banner, #include, `typedef <kiln_t> kiln_t;` and
/// the config, then the entry with `__launch_bounds__(threads)` (and `min_blocks` per SM when
/// > 0) whose body is `call(call_args)`; `call_args` "" passes the entry's parameters in order.
absl::StatusOr<std::string> instantiate(const KernelSpec& spec, const KernelTemplate& t);
/// The arguments a template's call takes: `call_args`, or the entry's parameters in order.
std::string template_call_args(const KernelSpec& spec, const std::string& call_args);

/// spec.source(), with the key in the error.
absl::StatusOr<std::string> emit_kernel_source(const KernelSpec& spec);
/// The entry as the plan records it.
std::vector<EntryParam> entry_params(const KernelSpec& spec);

}  // namespace kiln
