// Names and traits of op kinds (one exhaustive switch each).
#include "ir/op_kind.h"

#include <string>
#include <vector>

#include "ir/ops.h"

namespace kiln {

static const char* op_name_cstr(OpKind kind) {
  switch (kind) {
    case OpKind::kConstant: return "constant";
    case OpKind::kRopeTable: return "rope_table";
    case OpKind::kGather: return "gather";
    case OpKind::kReshape: return "reshape";
    case OpKind::kSlice: return "slice";
    case OpKind::kConcat: return "concat";
    case OpKind::kLastTokenRows: return "last_token_rows";
    case OpKind::kMatmul: return "matmul";
    case OpKind::kAdd: return "add";
    case OpKind::kSub: return "sub";
    case OpKind::kMul: return "mul";
    case OpKind::kDiv: return "div";
    case OpKind::kNeg: return "neg";
    case OpKind::kExp: return "exp";
    case OpKind::kRsqrt: return "rsqrt";
    case OpKind::kSilu: return "silu";
    case OpKind::kCast: return "cast";
    case OpKind::kReduceSum: return "reduce_sum";
    case OpKind::kReduceMean: return "reduce_mean";
    case OpKind::kReduceMax: return "reduce_max";
    case OpKind::kKvWrite: return "kv_write";
    case OpKind::kPagedQk: return "paged_qk";
    case OpKind::kCausalMask: return "causal_mask";
    case OpKind::kPagedPv: return "paged_pv";
    case OpKind::kRmsNorm: return "rmsnorm";
    case OpKind::kRmsNormResidual: return "rmsnorm_residual";
    case OpKind::kRope: return "rope";
    case OpKind::kFlashAttention: return "flash_attention";
    case OpKind::kFusedElementwise: return "fused_elementwise";
    case OpKind::kGemm: return "gemm";
    case OpKind::kAllReduce: return "all_reduce";
    case OpKind::kAllGather: return "all_gather";
  }
  return "?";
}

const std::string& op_name(OpKind v) {
  // Interned names: comparing with == compares text, and StrCat accepts them.
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (int i = 0; i < kNumOpKinds; ++i) {
      out.emplace_back(op_name_cstr(static_cast<OpKind>(i)));
    }
    return out;
  }();
  return names[static_cast<int>(v)];
}

std::optional<OpKind> parse_op_name(std::string_view name) {
  for (int i = 0; i < kNumOpKinds; ++i) {
    OpKind k = static_cast<OpKind>(i);
    if (op_name(k) == name) return k;
  }
  return std::nullopt;
}

OpTraits op_traits(OpKind kind) {
  OpTraits t;
  switch (kind) {
    case OpKind::kConstant:
    case OpKind::kRopeTable: t.num_inputs = 0; break;
    case OpKind::kGather: t.num_inputs = 2; break;
    case OpKind::kReshape:
    case OpKind::kSlice:
      t.num_inputs = 1;
      t.view = true;
      break;
    case OpKind::kConcat: break;
    case OpKind::kLastTokenRows: t.num_inputs = 2; break;
    case OpKind::kMatmul: t.num_inputs = 2; break;
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv:
      t.num_inputs = 2;
      t.elementwise = true;
      break;
    case OpKind::kNeg:
    case OpKind::kExp:
    case OpKind::kRsqrt:
    case OpKind::kSilu:
    case OpKind::kCast:
      t.num_inputs = 1;
      t.elementwise = true;
      break;
    case OpKind::kReduceSum:
    case OpKind::kReduceMean:
    case OpKind::kReduceMax:
      t.num_inputs = 1;
      t.reduction = true;
      break;
    case OpKind::kKvWrite:
      // The cache's scale array is an optional operand and result (fp8e4m3 caches).
      t.num_inputs = -1;
      t.num_outputs = -1;
      t.side_effect = true;
      break;
    case OpKind::kPagedQk: t.num_inputs = -1; break;
    case OpKind::kCausalMask: t.num_inputs = CausalMaskOp::kNumOperands; break;
    case OpKind::kPagedPv: t.num_inputs = -1; break;
    case OpKind::kRmsNorm:
      t.num_inputs = RmsNormOp::kNumOperands;
      t.fused = true;
      break;
    case OpKind::kRmsNormResidual:
      t.num_inputs = RmsNormResidualOp::kNumOperands;
      t.num_outputs = 2;
      t.fused = true;
      break;
    case OpKind::kRope:
      t.num_inputs = RopeOp::kNumOperands;
      t.fused = true;
      break;
    case OpKind::kFlashAttention:
      t.num_inputs = -1;  // 11, or 13 with the caches' scale arrays (then 5 results)
      t.num_outputs = -1;
      t.fused = true;
      t.side_effect = true;
      break;
    case OpKind::kFusedElementwise:
      t.fused = true;
      t.elementwise = true;
      break;
    case OpKind::kGemm: t.fused = true; break;
    case OpKind::kAllReduce:
    case OpKind::kAllGather:
      t.num_inputs = 1;
      t.collective = true;
      break;
  }
  return t;
}

}  // namespace kiln
