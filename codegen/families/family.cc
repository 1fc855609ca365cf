// The shared parts of every kernel family (see family.h).
#include "codegen/families/family.h"

#include <xxhash.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "codegen/kernel_source.h"
#include "ir/view.h"

namespace kiln {

absl::StatusOr<std::string> KernelSpec::source() const {
  absl::StatusOr<KernelTemplate> t = kernel_template();
  if (!t.ok()) return t.status();
  return instantiate(*this, *t);
}

std::vector<EntryParam> plan_params(const std::vector<EntryDecl>& decls) {
  std::vector<EntryParam> out;
  for (const EntryDecl& d : decls) {
    ParamType t = ParamType::kPointer;
    if (d.c_type == "int") t = ParamType::kI32;
    if (d.c_type == "long long") t = ParamType::kI64;
    if (d.c_type == "float") t = ParamType::kF32;
    out.push_back({d.name, t});
  }
  return out;
}

std::string spec_key(KernelFamily family, DType dtype,
                     const std::vector<std::pair<std::string, int64_t>>& params,
                     const std::vector<std::string>& tags, const std::string& payload) {
  std::string k = absl::StrCat(family_name(family), "_", dtype_name(dtype));
  for (const auto& [name, value] : params) absl::StrAppend(&k, "_", name, value);
  for (const std::string& tag : tags) absl::StrAppend(&k, "_", tag);
  if (!payload.empty()) {
    // 32 bits of xxh3 name the baked data; a clash would only merge two kernels' names, and the
    // kernel cache keys on the full source.
    absl::StrAppend(&k, "_h",
                    absl::StrFormat("%08x", static_cast<uint32_t>(
                                                XXH3_64bits(payload.data(), payload.size()))));
  }
  return k;
}

LoweringContext::LoweringContext(const Graph& graph, LoweredGraph& out)
    : graph_(graph), names_(graph), out_(out) {}

LaunchArg LoweringContext::tensor(const Value* v) const {
  if (!contiguous(v) && layout_error_.ok()) {
    layout_error_ = unsupported(absl::StrCat(
        "its kernel reads ", names_(v),
        " contiguously, but it is a strided view of another value's rows (a slice; ir/view.h)"));
  }
  return LaunchArg::tensor(names_(v));
}

LaunchArg LoweringContext::strided_tensor(const Value* v, int64_t* row_stride) const {
  std::optional<StridedRows> view = strided_rows(*v);
  *row_stride = view ? view->row_stride : 0;
  if (!view && layout_error_.ok()) {
    layout_error_ = unsupported(
        absl::StrCat(names_(v), " is a slice that no strided-rows layout describes (ir/view.h)"));
  }
  return LaunchArg::tensor(names_(v));
}

bool LoweringContext::contiguous(const Value* v) const {
  std::optional<StridedRows> view = strided_rows(*v);
  return view && view->contiguous();
}

absl::Status LoweringContext::launch(std::shared_ptr<const KernelSpec> spec, LaunchRule rule,
                                     std::vector<BoundParam> args) {
  if (!layout_error_.ok()) return std::exchange(layout_error_, absl::OkStatus());
  const std::string key = spec->key();
  const std::vector<EntryDecl> entry = spec->entry();
  PlanLaunch l;
  l.node = index_;
  l.rule = std::move(rule);
  if (l.rule.bound.empty()) l.rule.bound = node_bound_;
  for (const EntryDecl& p : entry) {
    auto it = std::find_if(args.begin(), args.end(),
                           [&](const BoundParam& b) { return b.first == p.name; });
    if (it == args.end()) {
      return absl::InternalError(absl::StrCat(key, ": the lowering binds no ", p.name));
    }
    l.args.push_back(std::move(it->second));
    args.erase(it);
  }
  if (!args.empty()) {
    return absl::InternalError(
        absl::StrCat(key, ": the lowering binds ", args[0].first, ", which the entry lacks"));
  }
  l.kernel = -1;
  for (size_t i = 0; i < out_.kernels.size(); ++i) {
    if (out_.kernels[i].key == key) l.kernel = static_cast<int>(i);
  }
  if (l.kernel < 0) {
    l.kernel = static_cast<int>(out_.kernels.size());
    out_.kernels.push_back({.key = key, .family = spec->family(), .params = plan_params(entry)});
    out_.specs.push_back(std::move(spec));
  }
  out_.launches.push_back(std::move(l));
  return absl::OkStatus();
}

bool LoweringContext::has_workspace(std::string_view name) const {
  return std::any_of(out_.workspaces.begin(), out_.workspaces.end(),
                     [&](const PlanWorkspace& w) { return w.name == name; });
}

absl::Status LoweringContext::unsupported(const std::string& why) const {
  const std::string what = node_ != nullptr ? print_node(*node_, names_) : "the sampling step";
  return absl::UnimplementedError(absl::StrCat("no GPU lowering for `", what, "`: ", why));
}

RowVectors row_vectors(int64_t h, DType dtype) {
  const int64_t elem = dtype == DType::kF32 ? 4 : 2;
  RowVectors r;
  r.vec = 16 / elem;
  while (r.vec > 1 && h % r.vec != 0) r.vec /= 2;
  const int64_t vecs = h / r.vec;
  r.threads = std::min<int64_t>(256, (vecs + 31) / 32 * 32);
  r.per_thread = (vecs + r.threads - 1) / r.threads;
  return r;
}

LaunchRule rule_1d(const std::string& grid, int64_t block, StepKind when) {
  LaunchRule r;
  r.grid = {grid, "1", "1"};
  r.block = {absl::StrCat(block), "1", "1"};
  r.when = when;
  return r;
}

std::string dim_expr(const Dim& d) {
  if (!d.is_symbolic()) return absl::StrCat(d.value);
  if (d.value == 0) return d.symbol;
  return absl::StrCat("(", d.symbol, d.value > 0 ? "+" : "", d.value, ")");
}

std::string product_expr(const Shape& s, size_t begin, size_t end) {
  int64_t c = 1;
  std::vector<std::string> syms;
  for (size_t i = begin; i < end && i < s.size(); ++i) {
    if (s[i].is_symbolic()) {
      syms.push_back(dim_expr(s[i]));
    } else {
      c *= s[i].value;
    }
  }
  if (c != 1 || syms.empty()) syms.push_back(absl::StrCat(c));
  return absl::StrJoin(syms, "*");
}

absl::StatusOr<int64_t> const_dim(const Dim& d, const char* what) {
  if (d.is_symbolic()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must be a constant, got ", d.symbol));
  }
  return d.value;
}

}  // namespace kiln
