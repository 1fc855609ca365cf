// The autotuner's core (see tuner.h).
#include "codegen/tune/tuner.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace kiln {
namespace {

using json = nlohmann::json;

constexpr int kCacheVersion = 1;

std::string entry_name(const std::string& device, const std::string& key) {
  return absl::StrCat(device, "|", key);
}

// Tuning attributes are ints, floats and strings; JSON keeps the three apart (8.0 stays a float).
json attrs_to_json(const Attributes& a) {
  json j = json::object();
  for (const auto& [name, v] : a.all()) {
    if (const auto* i = std::get_if<int64_t>(&v)) {
      j[name] = *i;
    } else if (const auto* d = std::get_if<double>(&v)) {
      j[name] = *d;
    } else if (const auto* s = std::get_if<std::string>(&v)) {
      j[name] = *s;
    }
  }
  return j;
}

absl::StatusOr<Attributes> attrs_from_json(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("attrs is not an object");
  Attributes a;
  for (const auto& [name, v] : j.items()) {
    if (v.is_number_integer()) {
      a.set(name, v.get<int64_t>());
    } else if (v.is_number_float()) {
      a.set(name, v.get<double>());
    } else if (v.is_string()) {
      a.set(name, v.get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("attribute ", name, " is not int/float/string"));
    }
  }
  return a;
}

bool outputs_match(const std::vector<float>& ref, const std::vector<float>& got, double tol) {
  if (ref.size() != got.size()) return false;
  for (size_t i = 0; i < ref.size(); ++i) {
    // NaN anywhere (an unwritten, poisoned output) fails: the comparison is false.
    if (!(std::fabs(got[i] - ref[i]) <= tol * (1.0 + std::fabs(ref[i])))) return false;
  }
  return true;
}

void apply(const Attributes& chosen, Node& node) {
  for (const auto& [name, v] : chosen.all()) node.attrs.set(name, v);
}

}  // namespace

std::string tune_cache_path(const std::string& kernel_cache_dir) {
  return kernel_cache_dir + "/tune.json";
}

absl::StatusOr<TuneCache> TuneCache::load(const std::string& path) {
  TuneCache c;
  c.path_ = path;
  std::ifstream in(path, std::ios::binary);
  if (!in) return c;
  std::stringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("tune cache ", path, ": ", why,
                                                   " (delete it to re-tune)"));
  };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (j.value("version", 0) != kCacheVersion) return bad("unknown version");
  const json& entries = j.contains("entries") ? j["entries"] : json::object();
  if (!entries.is_object()) return bad("entries is not an object");
  for (const auto& [name, e] : entries.items()) {
    if (!e.is_object() || !e.contains("attrs")) return bad(absl::StrCat(name, ": no attrs"));
    TuneResult r;
    r.family = e.value("family", "");
    r.key = e.value("key", "");
    r.device = e.value("device", "");
    r.label = e.value("label", "");
    r.us = e.value("us", 0.0);
    r.default_us = e.value("default_us", 0.0);
    r.tried = e.value("tried", 0);
    r.rejected = e.value("rejected", 0);
    absl::StatusOr<Attributes> a = attrs_from_json(e["attrs"]);
    if (!a.ok()) return bad(absl::StrCat(name, ": ", a.status().message()));
    r.chosen = std::move(*a);
    if (entry_name(r.device, r.key) != name) return bad(absl::StrCat(name, ": key mismatch"));
    c.entries_[name] = std::move(r);
  }
  return c;
}

absl::Status TuneCache::save() const {
  json entries = json::object();
  for (const auto& [name, r] : entries_) {
    entries[name] = {{"family", r.family},   {"key", r.key},
                     {"device", r.device},   {"label", r.label},
                     {"us", r.us},           {"default_us", r.default_us},
                     {"tried", r.tried},     {"rejected", r.rejected},
                     {"attrs", attrs_to_json(r.chosen)}};
  }
  const json j = {{"version", kCacheVersion}, {"entries", entries}};
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
    out << j.dump(1) << "\n";
    if (!out) return absl::DataLossError(absl::StrCat("short write to ", tmp));
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot rename ", tmp, " to ", path_));
  }
  return absl::OkStatus();
}

const TuneResult* TuneCache::find(const std::string& device, const std::string& key) const {
  auto it = entries_.find(entry_name(device, key));
  return it == entries_.end() ? nullptr : &it->second;
}

void TuneCache::put(const TuneResult& r) {
  TuneResult stored = r;
  stored.cached = false;
  entries_[entry_name(r.device, r.key)] = std::move(stored);
}

namespace {

absl::StatusOr<TuneResult> tune_node(const Node& node, const TunableFamily& f,
                                     TuneDevice& device) {
  absl::StatusOr<std::vector<Candidate>> cands = f.candidates(node);
  if (!cands.ok()) return cands.status();
  if (cands->empty()) return absl::InternalError(absl::StrCat(f.name(), ": no candidates"));
  // Every candidate's kernels in one parallel build; one that cannot build is dropped.
  std::vector<std::shared_ptr<const KernelSpec>> all;
  std::vector<bool> buildable(cands->size(), true);
  for (size_t i = 0; i < cands->size(); ++i) {
    absl::StatusOr<std::vector<std::shared_ptr<const KernelSpec>>> s = f.specs(node, (*cands)[i]);
    if (!s.ok()) {
      if (i == 0) return s.status();
      buildable[i] = false;
      continue;
    }
    all.insert(all.end(), s->begin(), s->end());
  }
  if (absl::Status s = device.prepare(all); !s.ok()) return s;

  TuneResult r;
  r.family = f.name();
  r.key = f.key(node);
  r.device = device.name();
  absl::StatusOr<Trial> ref = f.run(node, (*cands)[0], device);
  if (!ref.ok()) {
    return absl::Status(ref.status().code(), absl::StrCat(f.name(), " default configuration (",
                                                          (*cands)[0].label,
                                                          "): ", ref.status().message()));
  }
  r.tried = 1;
  r.default_us = r.us = ref->us;
  r.chosen = (*cands)[0].attrs;
  r.label = (*cands)[0].label;
  const double tol = f.tolerance(node);
  for (size_t i = 1; i < cands->size(); ++i) {
    ++r.tried;
    if (!buildable[i]) {
      ++r.rejected;
      continue;
    }
    absl::StatusOr<Trial> t = f.run(node, (*cands)[i], device);
    if (!t.ok() || !outputs_match(ref->output, t->output, tol)) {
      ++r.rejected;
      continue;
    }
    if (t->us < r.us) {
      r.us = t->us;
      r.chosen = (*cands)[i].attrs;
      r.label = (*cands)[i].label;
    }
  }
  return r;
}

}  // namespace

absl::StatusOr<std::vector<TuneResult>> tune_graph(
    Graph& graph, const std::vector<const TunableFamily*>& families, TuneDevice& device,
    TuneCache& cache) {
  std::vector<TuneResult> results;
  std::map<std::string, size_t> done;  // key -> index in results
  for (const auto& node_ptr : graph.nodes()) {
    Node& node = *node_ptr;
    const TunableFamily* f = nullptr;
    for (const TunableFamily* c : families) {
      if (c->applies(node)) {
        f = c;
        break;
      }
    }
    if (f == nullptr) continue;
    const std::string key = f->key(node);
    if (auto it = done.find(key); it != done.end()) {
      apply(results[it->second].chosen, node);
      continue;
    }
    TuneResult r;
    if (const TuneResult* hit = cache.find(device.name(), key)) {
      r = *hit;
      r.cached = true;
    } else {
      absl::StatusOr<TuneResult> t = tune_node(node, *f, device);
      if (!t.ok()) return t.status();
      r = std::move(*t);
      cache.put(r);
    }
    apply(r.chosen, node);
    done[key] = results.size();
    results.push_back(std::move(r));
  }
  return results;
}

std::string tune_report(const std::vector<TuneResult>& results) {
  std::string out;
  for (const TuneResult& r : results) {
    absl::StrAppendFormat(&out, "  tune %s %s: %s  %.1f us (default %.1f us, %.2fx)", r.family,
                          r.key, r.label, r.us, r.default_us,
                          r.us > 0 ? r.default_us / r.us : 0.0);
    if (r.cached) {
      absl::StrAppend(&out, ", cached\n");
    } else {
      absl::StrAppendFormat(&out, ", %d tried, %d rejected\n", r.tried, r.rejected);
    }
  }
  return out;
}

}  // namespace kiln
