// Plan file writing, reading and validation (see plan_file.h).
#include "codegen/plan_file.h"

#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

constexpr uint64_t kHeaderBytes = 5 + 4 + 8;

uint64_t align_up(uint64_t v) { return (v + kPlanAlignment - 1) / kPlanAlignment * kPlanAlignment; }

absl::Status corrupt(const PlanLoadOptions& o, const std::string& what) {
  return absl::DataLossError(absl::StrCat(o.plan_path_for_messages, ": ", what,
                                          "; the file is damaged or not a kiln plan: rebuild it "
                                          "with `kiln compile <model> -o ",
                                          o.plan_path_for_messages, "`"));
}

// Type checks of the manifest fields later code reads, so that reading them cannot throw.
absl::Status check_field(const nlohmann::json& obj, const char* key, nlohmann::json::value_t type,
                         const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " missing"));
  const bool ok = it->type() == type ||
                  (type == nlohmann::json::value_t::number_unsigned && it->is_number_unsigned()) ||
                  (type == nlohmann::json::value_t::number_integer && it->is_number_integer()) ||
                  (type == nlohmann::json::value_t::number_float && it->is_number());
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " has type ", it->type_name()));
  }
  return absl::OkStatus();
}

absl::Status check_manifest(const nlohmann::json& m) {
  using V = nlohmann::json::value_t;
  if (!m.is_object()) return absl::InvalidArgumentError("manifest is not a JSON object");
  for (auto [key, type] :
       std::initializer_list<std::pair<const char*, V>>{{"format_version", V::number_unsigned},
                                                        {"kiln_version", V::string},
                                                        {"arch", V::string},
                                                        {"nvrtc_version", V::string},
                                                        {"model", V::object},
                                                        {"ir", V::string},
                                                        {"kernels", V::array},
                                                        {"launches", V::array},
                                                        {"gemms", V::array},
                                                        {"weights", V::array},
                                                        {"blobs", V::array},
                                                        {"kv_plan", V::object}}) {
    if (absl::Status s = check_field(m, key, type, "manifest"); !s.ok()) return s;
  }
  int i = 0;
  for (const nlohmann::json& b : m["blobs"]) {
    const std::string w = absl::StrCat("manifest.blobs[", i++, "]");
    if (!b.is_object()) return absl::InvalidArgumentError(w + " is not an object");
    for (const char* k : {"offset", "size", "xxh3"}) {
      if (absl::Status s = check_field(b, k, V::number_unsigned, w); !s.ok()) return s;
    }
    if (absl::Status s = check_field(b, "name", V::string, w); !s.ok()) return s;
  }
  const size_t nblobs = m["blobs"].size();
  i = 0;
  for (const nlohmann::json& k : m["kernels"]) {
    const std::string w = absl::StrCat("manifest.kernels[", i++, "]");
    if (!k.is_object()) return absl::InvalidArgumentError(w + " is not an object");
    for (const char* f : {"key", "entry", "family"}) {
      if (absl::Status s = check_field(k, f, V::string, w); !s.ok()) return s;
    }
    for (const char* f : {"cubin_blob", "ptx_blob", "source_blob", "registers", "shared_bytes"}) {
      if (absl::Status s = check_field(k, f, V::number_unsigned, w); !s.ok()) return s;
    }
    for (const char* f : {"cubin_blob", "ptx_blob", "source_blob"}) {
      if (k[f].get<uint64_t>() >= nblobs) {
        return absl::InvalidArgumentError(
            absl::StrCat(w, ".", f, " names blob ", k[f].get<uint64_t>(), " of ", nblobs));
      }
    }
  }
  i = 0;
  for (const nlohmann::json& wt : m["weights"]) {
    const std::string w = absl::StrCat("manifest.weights[", i++, "]");
    if (!wt.is_object()) return absl::InvalidArgumentError(w + " is not an object");
    for (const char* f : {"name", "dtype"}) {
      if (absl::Status s = check_field(wt, f, V::string, w); !s.ok()) return s;
    }
    if (absl::Status s = check_field(wt, "shape", V::array, w); !s.ok()) return s;
    if (wt.contains("blob")) {
      if (absl::Status s = check_field(wt, "blob", V::number_unsigned, w); !s.ok()) return s;
      if (wt["blob"].get<uint64_t>() >= nblobs) {
        return absl::InvalidArgumentError(absl::StrCat(w, ".blob out of range"));
      }
    } else {
      if (absl::Status s = check_field(wt, "file", V::string, w); !s.ok()) return s;
      for (const char* f : {"offset", "size", "xxh3"}) {
        if (absl::Status s = check_field(wt, f, V::number_unsigned, w); !s.ok()) return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

int PlanWriter::add_blob(std::string name, std::string bytes) {
  blobs_.emplace_back(std::move(name), std::move(bytes));
  return static_cast<int>(blobs_.size()) - 1;
}

std::string PlanWriter::serialize(nlohmann::json manifest) const {
  // Blob offsets are relative to the blob region, which starts with the manifest's xxh3.
  nlohmann::json table = nlohmann::json::array();
  uint64_t off = kPlanAlignment;
  for (const auto& [name, bytes] : blobs_) {
    table.push_back({{"name", name},
                     {"offset", off},
                     {"size", bytes.size()},
                     {"xxh3", XXH3_64bits(bytes.data(), bytes.size())}});
    off = align_up(off + bytes.size());
  }
  manifest["blobs"] = table;
  const std::string m = manifest.dump(1);
  std::string out(kPlanMagic, 5);
  const uint32_t version = kPlanFormatVersion;
  const uint64_t len = m.size();
  out.append(reinterpret_cast<const char*>(&version), 4);
  out.append(reinterpret_cast<const char*>(&len), 8);
  out += m;
  const uint64_t base = align_up(out.size());
  out.resize(base, '\0');
  const uint64_t mh = XXH3_64bits(m.data(), m.size());
  out.append(reinterpret_cast<const char*>(&mh), 8);
  for (size_t i = 0; i < blobs_.size(); ++i) {
    out.resize(base + table[i]["offset"].get<uint64_t>(), '\0');
    out += blobs_[i].second;
  }
  return out;
}

absl::Status PlanWriter::write(const std::string& path, nlohmann::json manifest) const {
  const std::string bytes = serialize(std::move(manifest));
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return absl::DataLossError(absl::StrCat("short write to ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot rename ", tmp, " to ", path));
  return absl::OkStatus();
}

std::string_view LoadedPlan::blob(int index) const {
  const nlohmann::json& b = manifest["blobs"][index];
  return std::string_view(bytes).substr(blob_base + b["offset"].get<uint64_t>(),
                                        b["size"].get<uint64_t>());
}

int LoadedPlan::find_blob(std::string_view name) const {
  const nlohmann::json& blobs = manifest["blobs"];
  for (size_t i = 0; i < blobs.size(); ++i) {
    if (blobs[i]["name"].get_ref<const std::string&>() == name) return static_cast<int>(i);
  }
  return -1;
}

absl::StatusOr<uint64_t> hash_file_range(const std::string& path, uint64_t offset, uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  in.seekg(static_cast<std::streamoff>(offset));
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  std::vector<char> buf(1 << 22);
  uint64_t left = size;
  while (left > 0 && in) {
    const uint64_t n = std::min<uint64_t>(left, buf.size());
    in.read(buf.data(), static_cast<std::streamsize>(n));
    const uint64_t got = static_cast<uint64_t>(in.gcount());
    XXH3_64bits_update(st, buf.data(), got);
    left -= got;
    if (got < n) break;
  }
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  if (left != 0) return absl::OutOfRangeError(absl::StrCat(path, " is shorter than expected"));
  return h;
}

absl::StatusOr<LoadedPlan> parse_plan(std::string bytes, const PlanLoadOptions& o) {
  LoadedPlan plan;
  plan.bytes = std::move(bytes);
  const std::string& b = plan.bytes;
  if (b.size() < kHeaderBytes || std::memcmp(b.data(), kPlanMagic, 5) != 0) {
    return corrupt(
        o, b.size() < 5 ? "file too short for the KPLAN header" : "missing the \"KPLAN\" magic");
  }
  uint32_t version = 0;
  uint64_t len = 0;
  std::memcpy(&version, b.data() + 5, 4);
  std::memcpy(&len, b.data() + 9, 8);
  if (version != kPlanFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        o.plan_path_for_messages, ": plan format version ", version, ", this kiln reads version ",
        kPlanFormatVersion, ": rebuild it with this kiln (`kiln compile <model> -o ",
        o.plan_path_for_messages, "`)"));
  }
  if (len > b.size() - kHeaderBytes) {
    return corrupt(o, absl::StrCat("manifest length ", len, " exceeds the file (", b.size(),
                                   " bytes): truncated"));
  }
  plan.blob_base = align_up(kHeaderBytes + len);
  if (plan.blob_base + 8 > b.size()) return corrupt(o, "truncated before the blob region");
  const std::string_view m(b.data() + kHeaderBytes, len);
  uint64_t mh = 0;
  std::memcpy(&mh, b.data() + plan.blob_base, 8);
  if (XXH3_64bits(m.data(), m.size()) != mh) return corrupt(o, "manifest checksum mismatch");
  plan.manifest = nlohmann::json::parse(m, nullptr, /*allow_exceptions=*/false);
  if (plan.manifest.is_discarded()) return corrupt(o, "manifest is not valid JSON");
  if (absl::Status s = check_manifest(plan.manifest); !s.ok())
    return corrupt(o, std::string(s.message()));
  const nlohmann::json& man = plan.manifest;
  if (man["format_version"].get<uint64_t>() != kPlanFormatVersion) {
    return corrupt(o, "manifest format_version disagrees with the header");
  }
  // Every blob inside the file, then each blob's checksum (cubins are small; this is cheap).
  const uint64_t region = b.size() - plan.blob_base;
  int i = 0;
  for (const nlohmann::json& blob : man["blobs"]) {
    const uint64_t off = blob["offset"], size = blob["size"];
    if (off % kPlanAlignment != 0 || off > region || size > region - off) {
      return corrupt(
          o, absl::StrCat("blob ", i, " (", blob["name"].get<std::string>(), ") at offset ", off,
                          " size ", size, " lies outside the ", region, "-byte blob region"));
    }
    if (XXH3_64bits(b.data() + plan.blob_base + off, size) != blob["xxh3"].get<uint64_t>()) {
      return corrupt(o, absl::StrCat("blob ", i, " (", blob["name"].get<std::string>(),
                                     ") checksum mismatch"));
    }
    ++i;
  }
  const std::string arch = man["arch"];
  if (o.device_arch && *o.device_arch != arch) {
    return absl::FailedPreconditionError(absl::StrCat(
        "plan built for ", arch, ", this GPU is ", *o.device_arch, ": kiln compile --arch ",
        *o.device_arch, " <model> -o ", o.plan_path_for_messages));
  }
  if (o.nvrtc_major) {
    const std::string v = man["nvrtc_version"];
    const int major = std::atoi(v.c_str());
    if (major != *o.nvrtc_major) {
      return absl::FailedPreconditionError(absl::StrCat(
          "plan built with NVRTC ", v, ", this toolchain is CUDA ", *o.nvrtc_major,
          ".x: recompile with `kiln compile <model> -o ", o.plan_path_for_messages, "`"));
    }
  }
  if (o.weights != WeightCheck::kNone) {
    for (const nlohmann::json& w : man["weights"]) {
      if (w.contains("blob")) continue;  // packed: covered by the blob checksum above
      const std::string file = w["file"], name = w["name"];
      const uint64_t off = w["offset"], size = w["size"];
      std::error_code ec;
      const uint64_t fsize = std::filesystem::file_size(file, ec);
      if (ec) {
        return absl::NotFoundError(absl::StrCat("weight ", name, ": cannot read ", file,
                                                " (moved or deleted?): recompile the plan from "
                                                "the model's current location, or use "
                                                "--pack-weights to carry weights in the plan"));
      }
      if (off > fsize || size > fsize - off) {
        return absl::FailedPreconditionError(absl::StrCat(
            "weight ", name, ": ", file, " is ", fsize, " bytes but the plan expects ", size,
            " bytes at offset ", off, ": the checkpoint changed; recompile the plan"));
      }
      if (o.weights == WeightCheck::kChecksum) {
        absl::StatusOr<uint64_t> h = hash_file_range(file, off, size);
        if (!h.ok()) return h.status();
        if (*h != w["xxh3"].get<uint64_t>()) {
          return absl::FailedPreconditionError(
              absl::StrCat("weight ", name, " in ", file,
                           " does not match the checksum recorded at compile "
                           "time: the checkpoint changed; recompile the plan"));
        }
      }
    }
  }
  return plan;
}

absl::StatusOr<LoadedPlan> read_plan(const std::string& path, PlanLoadOptions options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open plan ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  options.plan_path_for_messages = path;
  return parse_plan(ss.str(), options);
}

}  // namespace kiln
