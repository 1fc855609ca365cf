// Plan summaries for the CLI (see plan_summary.h).
#include "codegen/plan_summary.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kiln {
namespace {

std::string bytes_str(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return absl::StrFormat(u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
}

std::string s(const nlohmann::json& j) { return j.is_string() ? j.get<std::string>() : j.dump(); }

}  // namespace

std::string plan_kernel_list(const LoadedPlan& plan) {
  const nlohmann::json& m = plan.manifest;
  std::map<std::string, int> uses;
  for (const nlohmann::json& l : m["launches"]) {
    if (l.is_object() && l.contains("kernel")) uses[s(l["kernel"])]++;
  }
  std::string out =
      absl::StrFormat("%-64s %5s %8s %8s %6s\n", "kernel", "regs", "smem", "cubin", "uses");
  for (const nlohmann::json& k : m["kernels"]) {
    const std::string key = k["key"];
    absl::StrAppend(
        &out, absl::StrFormat("%-64s %5d %8s %8s %6d\n", key, k["registers"].get<int64_t>(),
                              bytes_str(k["shared_bytes"].get<double>()),
                              bytes_str(plan.blob(k["cubin_blob"].get<int>()).size()), uses[key]));
  }
  return out;
}

std::string plan_summary(const LoadedPlan& plan) {
  const nlohmann::json& m = plan.manifest;
  std::string out;
  absl::StrAppend(&out, "plan: format ", s(m["format_version"]), ", kiln ", s(m["kiln_version"]),
                  ", ", bytes_str(plan.bytes.size()), "\n");
  absl::StrAppend(&out, "model: ", m["model"].value("summary", std::string("?")), "\n");
  if (m.contains("model_path")) absl::StrAppend(&out, "  from ", s(m["model_path"]), "\n");
  if (m.contains("tokenizer")) absl::StrAppend(&out, "  tokenizer ", s(m["tokenizer"]), "\n");
  absl::StrAppend(&out, "target: ", s(m["arch"]), ", NVRTC ", s(m["nvrtc_version"]), "\n");
  if (m.contains("limits")) absl::StrAppend(&out, "limits: ", m["limits"].dump(), "\n");
  absl::StrAppend(&out, "kernels: ", m["kernels"].size(), " unique, ", m["launches"].size(),
                  " launches\n", plan_kernel_list(plan));
  absl::StrAppend(&out, "gemms (cuBLASLt): ", m["gemms"].size(), "\n");
  std::map<std::string, int> shapes;
  for (const nlohmann::json& g : m["gemms"]) {
    if (!g.is_object()) continue;
    shapes[absl::StrCat(
        "M=", s(g.value("m", nlohmann::json("?"))), " N=", s(g.value("n", nlohmann::json(0))),
        " K=", s(g.value("k", nlohmann::json(0))), " ", s(g.value("a_dtype", nlohmann::json("?"))),
        " epilogue=", s(g.value("epilogue", nlohmann::json("?"))))]++;
  }
  for (const auto& [shape, n] : shapes) absl::StrAppend(&out, "  ", n, " x ", shape, "\n");
  const nlohmann::json& mem = m.contains("memory_plan") ? m["memory_plan"] : nlohmann::json();
  if (mem.is_object()) {
    absl::StrAppend(&out, "arena: ", bytes_str(mem.value("arena_bytes", 0.0)), " (lower bound ",
                    bytes_str(mem.value("lower_bound_bytes", 0.0)), ")\n");
  } else {
    absl::StrAppend(&out, "arena: not planned (plan-memory did not run)\n");
  }
  const nlohmann::json& kv = m["kv_plan"];
  absl::StrAppend(&out, "kv: page ", s(kv.value("page_size", nlohmann::json(0))), " tokens, ",
                  s(kv.value("layout", nlohmann::json("?"))), ", ",
                  s(kv.value("dtype", nlohmann::json("?"))), ", ",
                  bytes_str(kv.value("bytes_per_token", 0.0)), " per token (all layers)\n");
  double wbytes = 0;
  int packed = 0;
  for (const nlohmann::json& w : m["weights"]) {
    if (w.contains("blob")) {
      ++packed;
      wbytes += plan.blob(w["blob"].get<int>()).size();
    } else {
      wbytes += w.value("size", 0.0);
    }
  }
  absl::StrAppend(&out, "weights: ", m["weights"].size(), " tensors, ", bytes_str(wbytes), ", ",
                  packed > 0 ? "packed in the plan" : "referenced from the checkpoint", "\n");
  return out;
}

absl::StatusOr<std::string> plan_kernel_source(const LoadedPlan& plan, const std::string& key,
                                               bool ptx) {
  for (const nlohmann::json& k : plan.manifest["kernels"]) {
    if (k["key"] == key)
      return std::string(plan.blob(k[ptx ? "ptx_blob" : "source_blob"].get<int>()));
  }
  return absl::NotFoundError(
      absl::StrCat("no kernel named ", key, " in this plan (list them with --kernels)"));
}

}  // namespace kiln
