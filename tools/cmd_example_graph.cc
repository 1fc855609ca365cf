// The built-in example graph: y = x + down(silu(gate(n)) * up(n)), n = rmsnorm(x) * w.
#include "ir/builder.h"
#include "tools/example_graph.h"

namespace kiln::tools {

absl::StatusOr<std::unique_ptr<Graph>> build_example_graph() {
  auto graph = std::make_unique<Graph>("example_mlp_block");
  GraphBuilder b(*graph);
  const int64_t hidden = 64, ffn = 128;
  b.symbol("T", 256);
  const DType dt = DType::kBF16;
  Value* x = b.input("x", {dt, {Dim::symbolic("T"), Dim::constant(hidden)}});  // x: [T, 64]
  Value* norm_w = b.param("mlp_norm", {dt, {Dim::constant(hidden)}});
  Value* gate_w = b.param("gate_proj", {dt, {Dim::constant(ffn), Dim::constant(hidden)}});
  Value* up_w = b.param("up_proj", {dt, {Dim::constant(ffn), Dim::constant(hidden)}});
  Value* down_w = b.param("down_proj", {dt, {Dim::constant(hidden), Dim::constant(ffn)}});
  // RMSNorm as its arithmetic: x * rsqrt(mean(x*x) + eps) * w
  Value* ms = b.reduce_mean(b.mul(x, x));                              // [T, 1]
  Value* inv = b.rsqrt(b.add(ms, b.constant(1e-5, dt)));               // [T, 1]
  Value* n = b.mul(b.mul(x, inv), norm_w);                             // [T, 64]
  Value* act = b.mul(b.silu(b.matmul(n, gate_w)), b.matmul(n, up_w));  // [T, 128]
  Value* y = b.add(x, b.matmul(act, down_w));                          // [T, 64]
  b.output("y", y);
  if (!b.status().ok()) return b.status();
  return graph;
}

}  // namespace kiln::tools
