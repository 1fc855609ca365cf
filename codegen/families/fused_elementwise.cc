// Family fused_elementwise (see fused_elementwise.h).
#include "codegen/families/fused_elementwise.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codegen/kernel_source.h"
#include "ir/expr.h"

namespace kiln {
namespace {

bool is_constant_dim(const std::string& d) {
  return !d.empty() && std::isdigit(static_cast<unsigned char>(d[0]));
}

}  // namespace

std::string FusedElementwiseSpec::key() const {
  // The expression, input types, broadcast patterns and output dims are all baked into the
  // source; the key names them by hash.
  std::string payload = expr;
  for (size_t i = 0; i < input_dtypes.size(); ++i) {
    absl::StrAppend(&payload, "|", dtype_name(input_dtypes[i]), ":", input_patterns[i]);
    if (i < input_row_strides.size() && input_row_strides[i] != 0) {
      absl::StrAppend(&payload, "/", input_row_strides[i]);
    }
  }
  absl::StrAppend(&payload, "|", absl::StrJoin(output_dims, ","));
  return spec_key(family(), dtype,
                  {{"n", static_cast<int64_t>(input_dtypes.size())},
                   {"r", static_cast<int64_t>(output_dims.size())}},
                  {}, payload);
}

std::vector<EntryDecl> FusedElementwiseSpec::entry() const {
  std::vector<EntryDecl> p = {{"kiln_out_t*", "out"}};
  for (size_t i = 0; i < input_dtypes.size(); ++i) {
    // Unsupported dtypes are refused by lower_elementwise; "void" keeps this total.
    p.push_back({absl::StrCat("const ", kernel_type_name(input_dtypes[i]).value_or("void"), "*"),
                 absl::StrCat("in", i)});
  }
  p.push_back({"long long", "n"});
  for (size_t a = 0; a < output_dims.size(); ++a) {
    if (!is_constant_dim(output_dims[a])) p.push_back({"int", absl::StrCat("dim", a)});
  }
  return p;
}

// One thread per output element (grid-stride); constant dims are baked in (cheap division),
// symbolic dims come at run time. The body is generated as a device function (the config) that
// the entry calls.
absl::StatusOr<KernelTemplate> FusedElementwiseSpec::kernel_template() const {
  absl::StatusOr<Expr> parsed = Expr::parse(expr);
  if (!parsed.ok()) return parsed.status();
  absl::StatusOr<std::string> out_t = kernel_type_name(dtype);
  if (!out_t.ok()) return out_t.status();
  const int rank = static_cast<int>(output_dims.size());
  std::string s = absl::StrCat("using namespace kiln_k;\ntypedef ", *out_t, " kiln_out_t;\n\n// expr: ",
                               expr, "\n");
  absl::StrAppend(&s, "__device__ __forceinline__ void fused_elementwise_body(",
                  entry_signature(entry()), ") {\n");
  std::vector<std::string> dim(rank);
  for (int a = 0; a < rank; ++a) {
    dim[a] = is_constant_dim(output_dims[a]) ? absl::StrCat(output_dims[a], "LL")
                                             : absl::StrCat("(long long)dim", a);
  }
  absl::StrAppend(&s,
                  "  for (long long i = task_block().x * (long long)blockDim.x + threadIdx.x; i < n;\n"
                  "       i += (long long)task_grid().x * blockDim.x) {\n"
                  "    long long rem = i;\n");
  for (int a = rank - 1; a >= 0; --a) {
    absl::StrAppend(&s, "    const long long c", a, " = rem % ", dim[a], ";\n    rem /= ", dim[a],
                    ";\n");
  }
  absl::StrAppend(&s, "    (void)rem;\n");
  for (size_t in = 0; in < input_patterns.size(); ++in) {
    // Index into input `in`: only its non-broadcast axes advance, with its own strides.
    // A strided-rows input (never broadcast along the first axis) steps its own row stride.
    const int64_t row_stride = in < input_row_strides.size() ? input_row_strides[in] : 0;
    std::string idx = "0LL";
    std::string stride = "1LL";
    for (int a = rank - 1; a >= (row_stride != 0 ? 1 : 0); --a) {
      if (input_patterns[in][a] != '*') continue;
      idx = absl::StrCat(idx, " + c", a, " * ", stride);
      stride = absl::StrCat(stride, " * ", dim[a]);
    }
    if (row_stride != 0) idx = absl::StrCat(idx, " + c0 * ", row_stride, "LL");
    absl::StrAppend(&s, "    const float x", in, " = to_float(in", in, "[", idx, "]);\n");
  }
  const std::vector<Expr::Node>& nodes = parsed->nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Expr::Node& n = nodes[i];
    const std::string a = n.args[0] >= 0 ? absl::StrCat("e", n.args[0]) : "";
    const std::string b = n.args[1] >= 0 ? absl::StrCat("e", n.args[1]) : "";
    std::string v;
    switch (n.kind) {
      case Expr::Kind::kInput:
        if (n.input >= static_cast<int>(input_patterns.size())) {
          return absl::InvalidArgumentError(absl::StrCat("expr \"", expr, "\" reads $", n.input,
                                                         " but the node has ",
                                                         input_patterns.size(), " inputs"));
        }
        v = absl::StrCat("x", n.input);
        break;
      case Expr::Kind::kLiteral: v = float_literal(n.literal); break;
      case Expr::Kind::kAdd: v = absl::StrCat(a, " + ", b); break;
      case Expr::Kind::kSub: v = absl::StrCat(a, " - ", b); break;
      case Expr::Kind::kMul: v = absl::StrCat(a, " * ", b); break;
      case Expr::Kind::kDiv: v = absl::StrCat(a, " / ", b); break;
      case Expr::Kind::kNeg: v = absl::StrCat("-", a); break;
      case Expr::Kind::kExp: v = absl::StrCat("expf(", a, ")"); break;
      case Expr::Kind::kRsqrt: v = absl::StrCat("rsqrtf(", a, ")"); break;
      case Expr::Kind::kSilu: v = absl::StrCat(a, " / (1.f + expf(-", a, "))"); break;
    }
    absl::StrAppend(&s, "    const float e", i, " = ", v, ";\n");
  }
  absl::StrAppend(&s, "    out[i] = from_float<kiln_out_t>(e", nodes.size() - 1, ");\n  }\n}\n");
  // kiln_t is unused by the body (inputs and output carry their own types).
  KernelTemplate t{"common.cuh", dtype, s, 256, "fused_elementwise_body"};
  return t;
}

absl::Status lower_elementwise(const Node& n, LoweringContext& ctx) {
  auto spec = std::make_shared<FusedElementwiseSpec>();
  switch (n.op) {
    case OpKind::kAdd: spec->expr = "add($0, $1)"; break;
    case OpKind::kSub: spec->expr = "sub($0, $1)"; break;
    case OpKind::kMul: spec->expr = "mul($0, $1)"; break;
    case OpKind::kDiv: spec->expr = "div($0, $1)"; break;
    case OpKind::kNeg: spec->expr = "neg($0)"; break;
    case OpKind::kExp: spec->expr = "exp($0)"; break;
    case OpKind::kRsqrt: spec->expr = "rsqrt($0)"; break;
    case OpKind::kSilu: spec->expr = "silu($0)"; break;
    case OpKind::kCast: spec->expr = "$0"; break;
    default: {
      absl::StatusOr<std::string> e = n.attrs.get_string("expr");
      if (!e.ok()) return e.status();
      spec->expr = *e;
    }
  }
  const Shape& os = n.outputs[0]->type.shape;
  const size_t rank = os.size();
  spec->dtype = n.outputs[0]->type.dtype;
  if (!kernel_type_name(spec->dtype).ok()) return ctx.unsupported("output dtype");
  std::vector<BoundParam> args = {{"out", ctx.tensor(n.outputs[0])}};
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    const Value* in = n.inputs[i];
    if (!kernel_type_name(in->type.dtype).ok()) {
      return ctx.unsupported(absl::StrCat("input ", i, " dtype ", dtype_name(in->type.dtype)));
    }
    // Right-aligned broadcasting: an axis of extent 1 (where the output's is not) stays put.
    const Shape& s = in->type.shape;
    std::string pattern(rank, '1');
    for (size_t a = 0; a < s.size(); ++a) {
      const size_t oa = rank - s.size() + a;
      if (!(s[a] == Dim::constant(1)) || os[oa] == Dim::constant(1)) pattern[oa] = '*';
    }
    int64_t row_stride = 0;
    LaunchArg arg = ctx.strided_tensor(in, &row_stride);
    if (row_stride != 0 && (s.size() != rank || pattern[0] != '*')) {
      return ctx.unsupported(absl::StrCat("input ", i, " is strided rows and broadcast"));
    }
    spec->input_dtypes.push_back(in->type.dtype);
    spec->input_patterns.push_back(pattern);
    spec->input_row_strides.push_back(row_stride);
    args.push_back({absl::StrCat("in", i), std::move(arg)});
  }
  for (size_t a = 0; a < rank; ++a) {
    spec->output_dims.push_back(os[a].is_symbolic() ? os[a].symbol : absl::StrCat(os[a].value));
    if (os[a].is_symbolic()) {
      args.push_back({absl::StrCat("dim", a), LaunchArg::integer(dim_expr(os[a]))});
    }
  }
  const std::string total = product_expr(os, 0, rank);
  args.push_back({"n", LaunchArg::integer(total)});
  return ctx.launch(std::move(spec), rule_1d(absl::StrCat("cdiv(", total, ", 256)"), 256),
                    std::move(args));
}

}  // namespace kiln
