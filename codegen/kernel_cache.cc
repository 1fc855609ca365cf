// Kernel cache entries and the parallel kernel builder (see kernel_cache.h).
//
// Entry file <key>.kcubin: u64 meta length | JSON meta | cubin | ptx. The meta carries the sizes
// and the cubin's xxh3, so a truncated or corrupted entry reads as a miss and is rebuilt. Writers
// go through a temporary file + rename (atomic on POSIX), readers and writers of one key
// serialize on flock(<key>.lock).
#include "codegen/kernel_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codegen/kernel_sources.h"
#include "nlohmann/json.hpp"

namespace kiln {
namespace {

// Holds flock(LOCK_EX) on a lock file for its lifetime.
class FileLock {
 public:
  explicit FileLock(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ >= 0) {
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~FileLock() {
    if (fd_ >= 0) {
      ::flock(fd_, LOCK_UN);
      ::close(fd_);
    }
  }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace

std::string default_cache_root() {
  if (const char* c = std::getenv("KILN_CACHE"); c && *c) return c;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/kiln";
}

std::string kernel_cache_key(const std::string& source, const std::string& arch,
                             const std::string& nvrtc_version,
                             const std::vector<std::string>& flags) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  auto add = [&](std::string_view s) {
    const uint64_t n = s.size();  // length-prefixed, so field boundaries cannot shift
    XXH3_64bits_update(st, &n, sizeof(n));
    XXH3_64bits_update(st, s.data(), s.size());
  };
  add("kiln-kernel-cache-v1");
  add(source);
  // The generated source #includes the embedded templates: a template change must miss too.
  for (const EmbeddedKernelFile& f : embedded_kernel_files()) {
    add(f.name);
    add(f.text);
  }
  add(arch);
  add(nvrtc_version);
  for (const std::string& f : flags) add(f);
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return absl::StrFormat("%016x", h);
}

std::optional<CompiledKernel> KernelCache::load(const std::string& path,
                                                const std::string& name) const {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  uint64_t meta_len = 0;
  if (data.size() < 8) return std::nullopt;
  std::memcpy(&meta_len, data.data(), 8);
  if (meta_len > data.size() - 8) return std::nullopt;
  nlohmann::json meta = nlohmann::json::parse(data.substr(8, meta_len), nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) return std::nullopt;
  try {
    const uint64_t cubin_size = meta.at("cubin_size"), ptx_size = meta.at("ptx_size");
    const uint64_t rest = data.size() - 8 - meta_len;
    if (cubin_size > rest || ptx_size != rest - cubin_size) return std::nullopt;
    CompiledKernel k;
    k.name = name;
    k.cubin = data.substr(8 + meta_len, cubin_size);
    k.ptx = data.substr(8 + meta_len + cubin_size);
    if (XXH3_64bits(k.cubin.data(), k.cubin.size()) != meta.at("cubin_xxh3").get<uint64_t>()) {
      return std::nullopt;
    }
    k.log = meta.at("log");
    k.registers = meta.at("registers");
    k.shared_bytes = meta.at("shared_bytes");
    k.stack_bytes = meta.at("stack_bytes");
    k.spill_bytes = meta.at("spill_bytes");
    return k;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

absl::Status KernelCache::store(const std::string& path, const CompiledKernel& k) const {
  nlohmann::json meta = {{"name", k.name},
                         {"cubin_size", k.cubin.size()},
                         {"ptx_size", k.ptx.size()},
                         {"cubin_xxh3", XXH3_64bits(k.cubin.data(), k.cubin.size())},
                         {"log", k.log},
                         {"registers", k.registers},
                         {"shared_bytes", k.shared_bytes},
                         {"stack_bytes", k.stack_bytes},
                         {"spill_bytes", k.spill_bytes}};
  const std::string m = meta.dump();
  const uint64_t len = m.size();
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".",
                                       std::hash<std::thread::id>()(std::this_thread::get_id()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << m << k.cubin << k.ptx;
    if (!out) return absl::InternalError(absl::StrCat("cannot write kernel cache entry ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<CompiledKernel> KernelCache::get_or_compile(const std::string& name,
                                                           const std::string& source,
                                                           const std::string& arch, bool* hit) {
  const std::string key = kernel_cache_key(source, arch, nvrtc_version(), nvrtc_flags(arch));
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  const std::string base = absl::StrCat(dir_, "/", key);
  FileLock lock(base + ".lock");  // without it (read-only cache) we still compile correctly
  if (std::optional<CompiledKernel> k = load(base + ".kcubin", name)) {
    if (hit) *hit = true;
    return *k;
  }
  if (hit) *hit = false;
  absl::StatusOr<CompiledKernel> k = nvrtc_compile(name, source, arch);
  if (!k.ok()) return k.status();
  if (lock.ok()) {
    if (absl::Status s = store(base + ".kcubin", *k); !s.ok()) {
      // A cache we cannot write costs time, not correctness.
      k->log += absl::StrCat("\nkiln: kernel cache not updated: ", s.message());
    }
  }
  return k;
}

absl::StatusOr<std::vector<CompiledKernel>> build_kernels(const std::vector<KernelJob>& jobs,
                                                          const std::string& arch,
                                                          KernelCache* cache, int threads,
                                                          BuildStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<absl::StatusOr<CompiledKernel>> results(jobs.size(), absl::UnknownError("not built"));
  std::vector<char> hits(jobs.size(), 0);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < jobs.size(); i = next++) {
      bool hit = false;
      results[i] = cache ? cache->get_or_compile(jobs[i].name, jobs[i].source, arch, &hit)
                         : nvrtc_compile(jobs[i].name, jobs[i].source, arch);
      hits[i] = hit;
    }
  };
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(std::max<size_t>(1, jobs.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  std::vector<CompiledKernel> out;
  BuildStats s;
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!results[i].ok()) return results[i].status();
    out.push_back(std::move(*results[i]));
    (hits[i] ? s.hits : s.compiled)++;
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (stats) *stats = s;
  return out;
}

}  // namespace kiln
