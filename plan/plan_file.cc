// Plan file writing, reading and validation (see plan_file.h).
#include "plan/plan_file.h"

#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "plan/weight_parts.h"

namespace kiln {
namespace {

constexpr uint64_t kHeaderBytes = 5 + 4 + 8;

uint64_t align_up(uint64_t v) { return (v + kPlanAlignment - 1) / kPlanAlignment * kPlanAlignment; }

std::string rebuild_hint(const PlanLoadOptions& o) {
  return absl::StrCat("rebuild it with `kiln compile <model> -o ", o.plan_path_for_messages, "`");
}

absl::Status corrupt(const PlanLoadOptions& o, const std::string& what) {
  return absl::DataLossError(
      absl::StrCat(o.plan_path_for_messages, ": ", what,
                   "; the file is damaged or not a kiln plan: ", rebuild_hint(o)));
}

// Every blob index the plan holds names a blob of the file.
absl::Status check_blob_indices(const Plan& p, size_t nblobs) {
  auto check = [&](int index, bool optional, const std::string& where) -> absl::Status {
    if ((optional && index == -1) || (index >= 0 && static_cast<size_t>(index) < nblobs)) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(where, " names blob ", index, " of ", nblobs));
  };
  for (size_t i = 0; i < p.kernels.size(); ++i) {
    const PlanKernel& k = p.kernels[i];
    const std::string w = absl::StrCat("manifest.kernels[", i, "]");
    for (auto [index, field] :
         {std::pair{k.cubin_blob, ".cubin_blob"}, std::pair{k.ptx_blob, ".ptx_blob"},
          std::pair{k.source_blob, ".source_blob"}}) {
      if (absl::Status s = check(index, /*optional=*/true, w + field); !s.ok()) return s;
    }
  }
  for (size_t i = 0; i < p.weights.size(); ++i) {
    if (!p.weights[i].packed()) continue;
    const std::string w = absl::StrCat("manifest.weights[", i, "].blob");
    if (absl::Status s = check(p.weights[i].blob, false, w); !s.ok()) return s;
  }
  for (size_t i = 0; i < p.launches.size(); ++i) {
    const PlanLaunch& l = p.launches[i];
    if (l.kernel < 0 || static_cast<size_t>(l.kernel) >= p.kernels.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "manifest.launches[", i, "].kernel names kernel ", l.kernel, " of ", p.kernels.size()));
    }
    const size_t want = p.kernels[l.kernel].params.size();
    if (l.args.size() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest.launches[", i, "] passes ", l.args.size(), " arguments to ",
                       p.kernels[l.kernel].key, ", which takes ", want));
    }
  }
  if (p.persistent) {
    // The persistent launch and its stages are launches of the plan, the stages in program order.
    const PlanPersistent& ps = *p.persistent;
    auto launch = [&](int i) { return i >= 0 && static_cast<size_t>(i) < p.launches.size(); };
    if (!launch(ps.launch)) {
      return absl::InvalidArgumentError(absl::StrCat("manifest.persistent.launch names launch ",
                                                     ps.launch, " of ", p.launches.size()));
    }
    for (size_t i = 0; i < ps.stages.size(); ++i) {
      if (!launch(ps.stages[i]) || ps.stages[i] == ps.launch ||
          (i > 0 && ps.stages[i] <= ps.stages[i - 1])) {
        return absl::InvalidArgumentError(
            absl::StrCat("manifest.persistent.stages[", i, "] = ", ps.stages[i],
                         ": stages are other launches of the plan, in increasing order"));
      }
    }
  }
  // Each cascade names a plain decode launch and its two cascade forms, of the same node and of
  // the families the runtime binds them as; no launch serves two cascades.
  std::vector<bool> taken(p.launches.size(), false);
  for (size_t i = 0; i < p.cascades.size(); ++i) {
    const PlanCascade& c = p.cascades[i];
    const std::string w = absl::StrCat("manifest.cascades[", i, "]");
    for (auto [index, field, family, when] :
         {std::tuple{c.decode, ".decode", KernelFamily::kFlashAttentionDecode, StepKind::kDecode},
          std::tuple{c.prefix, ".prefix", KernelFamily::kCascadePrefix, StepKind::kCascade},
          std::tuple{c.suffix, ".suffix", KernelFamily::kCascadeSuffix, StepKind::kCascade}}) {
      if (index < 0 || static_cast<size_t>(index) >= p.launches.size() || taken[index]) {
        return absl::InvalidArgumentError(absl::StrCat(w, field, " names launch ", index, " of ",
                                                       p.launches.size(),
                                                       " (or one another cascade names)"));
      }
      taken[index] = true;
      const PlanLaunch& l = p.launches[index];
      if (p.kernels[l.kernel].family != family || l.rule.when != when ||
          l.node != p.launches[c.decode].node) {
        return absl::InvalidArgumentError(absl::StrCat(
            w, field, " = launch ", index, " (", p.kernels[l.kernel].key, ", node ", l.node,
            ") is not a ", family_name(family), " launch of the decode attention's node"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string serialize_plan(const Plan& plan, const std::vector<PlanBlob>& blobs) {
  // Blob offsets are relative to the blob region, which starts with the manifest's xxh3.
  std::vector<BlobRecord> table;
  uint64_t off = kPlanAlignment;
  for (const PlanBlob& b : blobs) {
    table.push_back({b.name, off, b.bytes.size(), XXH3_64bits(b.bytes.data(), b.bytes.size())});
    off = align_up(off + b.bytes.size());
  }
  Plan versioned = plan;
  versioned.format_version = kPlanFormatVersion;
  const std::string m = dump_manifest(manifest_to_json(versioned, table));
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
  for (size_t i = 0; i < blobs.size(); ++i) {
    out.resize(base + table[i].offset, '\0');
    out += blobs[i].bytes;
  }
  return out;
}

absl::Status write_plan(const std::string& path, const Plan& plan,
                        const std::vector<PlanBlob>& blobs) {
  const std::string bytes = serialize_plan(plan, blobs);
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
  if (index < 0 || static_cast<size_t>(index) >= blobs.size()) return {};
  return std::string_view(bytes).substr(blob_base + blobs[index].offset, blobs[index].size);
}

int LoadedPlan::find_blob(std::string_view name) const {
  for (size_t i = 0; i < blobs.size(); ++i) {
    if (blobs[i].name == name) return static_cast<int>(i);
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

absl::Status check_plan_weights(const Plan& plan, WeightCheck check) {
  if (check == WeightCheck::kNone) return absl::OkStatus();
  for (const PlanWeight& w : plan.weights) {
    if (w.derived()) {  // its bytes are its sources', checked as weights of their own
      if (absl::StatusOr<std::vector<WeightByteRange>> r = weight_byte_ranges(plan, w); !r.ok()) {
        return r.status();
      }
      continue;
    }
    if (w.packed()) continue;  // covered by the blob checksums
    std::error_code ec;
    const uint64_t fsize = std::filesystem::file_size(w.file, ec);
    if (ec) {
      return absl::NotFoundError(absl::StrCat("weight ", w.name, ": cannot read ", w.file,
                                              " (moved or deleted?): recompile the plan from "
                                              "the model's current location, or use "
                                              "--pack-weights to carry weights in the plan"));
    }
    if (w.offset > fsize || w.size > fsize - w.offset) {
      return absl::FailedPreconditionError(absl::StrCat(
          "weight ", w.name, ": ", w.file, " is ", fsize, " bytes but the plan expects ", w.size,
          " bytes at offset ", w.offset, ": the checkpoint changed; recompile the plan"));
    }
    if (check == WeightCheck::kChecksum) {
      absl::StatusOr<uint64_t> h = hash_file_range(w.file, w.offset, w.size);
      if (!h.ok()) return h.status();
      if (*h != w.xxh3) {
        return absl::FailedPreconditionError(
            absl::StrCat("weight ", w.name, " in ", w.file,
                         " does not match the checksum recorded at compile time: the checkpoint "
                         "changed; recompile the plan"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedPlan> parse_plan(std::string bytes, const PlanLoadOptions& o) {
  LoadedPlan loaded;
  loaded.bytes = std::move(bytes);
  const std::string& b = loaded.bytes;
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
        kPlanFormatVersion, ": ", rebuild_hint(o), " using this kiln"));
  }
  if (len > b.size() - kHeaderBytes) {
    return corrupt(o, absl::StrCat("manifest length ", len, " exceeds the file (", b.size(),
                                   " bytes): truncated"));
  }
  loaded.blob_base = align_up(kHeaderBytes + len);
  if (loaded.blob_base + 8 > b.size()) return corrupt(o, "truncated before the blob region");
  const std::string_view m(b.data() + kHeaderBytes, len);
  uint64_t mh = 0;
  std::memcpy(&mh, b.data() + loaded.blob_base, 8);
  if (XXH3_64bits(m.data(), m.size()) != mh) return corrupt(o, "manifest checksum mismatch");
  const nlohmann::json j = nlohmann::json::parse(m, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return corrupt(o, "manifest is not valid JSON");
  absl::StatusOr<Manifest> manifest = manifest_from_json(j);
  if (!manifest.ok()) return corrupt(o, std::string(manifest.status().message()));
  loaded.plan = std::move(manifest->plan);
  loaded.blobs = std::move(manifest->blobs);
  const Plan& plan = loaded.plan;
  if (plan.format_version != kPlanFormatVersion) {
    return corrupt(o, "manifest format_version disagrees with the header");
  }
  // Every blob inside the file, then each blob's checksum (cubins are small; this is cheap).
  const uint64_t region = b.size() - loaded.blob_base;
  for (size_t i = 0; i < loaded.blobs.size(); ++i) {
    const BlobRecord& blob = loaded.blobs[i];
    if (blob.offset % kPlanAlignment != 0 || blob.offset > region ||
        blob.size > region - blob.offset) {
      return corrupt(
          o, absl::StrCat("blob ", i, " (", blob.name, ") at offset ", blob.offset, " size ",
                          blob.size, " lies outside the ", region, "-byte blob region"));
    }
    if (XXH3_64bits(b.data() + loaded.blob_base + blob.offset, blob.size) != blob.xxh3) {
      return corrupt(o, absl::StrCat("blob ", i, " (", blob.name, ") checksum mismatch"));
    }
  }
  if (absl::Status s = check_blob_indices(plan, loaded.blobs.size()); !s.ok()) {
    return corrupt(o, std::string(s.message()));
  }
  if (o.device_arch && *o.device_arch != plan.arch) {
    return absl::FailedPreconditionError(absl::StrCat(
        "plan built for ", plan.arch, ", this GPU is ", *o.device_arch, ": kiln compile --arch ",
        *o.device_arch, " <model> -o ", o.plan_path_for_messages));
  }
  if (o.nvrtc_major) {
    const int major = std::atoi(plan.nvrtc_version.c_str());
    if (major != *o.nvrtc_major) {
      return absl::FailedPreconditionError(absl::StrCat(
          "plan built with NVRTC ", plan.nvrtc_version, ", this toolchain is CUDA ", *o.nvrtc_major,
          ".x: recompile with `kiln compile <model> -o ", o.plan_path_for_messages, "`"));
    }
  }
  if (absl::Status s = check_plan_weights(plan, o.weights); !s.ok()) return s;
  return loaded;
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
