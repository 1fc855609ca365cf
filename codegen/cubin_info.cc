// ELF walking for cubin resource attributes (see cubin_info.h).
#include "codegen/cubin_info.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

// EIATTR codes and formats of NVIDIA's .nv.info sections (as cuobjdump -elf names them).
constexpr uint8_t kFormatNoValue = 0x01, kFormatByte = 0x02, kFormatHalf = 0x03,
                  kFormatSized = 0x04;
constexpr uint8_t kAttrFrameSize = 0x11, kAttrRegCount = 0x2f;

class Reader {
 public:
  explicit Reader(std::string_view bytes) : b_(bytes) {}
  template <class T>
  std::optional<T> at(uint64_t offset) const {
    if (offset > b_.size() || b_.size() - offset < sizeof(T)) return std::nullopt;
    T v;
    std::memcpy(&v, b_.data() + offset, sizeof(T));  // cubins are little-endian, as are hosts
    return v;
  }
  std::optional<std::string_view> cstr(uint64_t offset, uint64_t limit) const {
    if (offset >= b_.size() || limit > b_.size() || offset >= limit) return std::nullopt;
    const char* p = b_.data() + offset;
    const void* nul = std::memchr(p, 0, limit - offset);
    if (nul == nullptr) return std::nullopt;
    return std::string_view(p, static_cast<const char*>(nul) - p);
  }
  size_t size() const { return b_.size(); }

 private:
  std::string_view b_;
};

struct Section {
  uint32_t name = 0;
  uint32_t type = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t link = 0;
};

absl::Status bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("cubin: ", what));
}

}  // namespace

absl::StatusOr<CubinInfo> read_cubin_info(std::string_view cubin, std::string_view kernel_name) {
  const std::string kernel(kernel_name);
  Reader r(cubin);
  if (cubin.size() < 64 ||
      cubin.substr(0, 4) !=
          "\x7f"
          "ELF" ||
      cubin[4] != 2) {
    return bad("not a 64-bit ELF file");
  }
  const auto shoff = r.at<uint64_t>(0x28);
  const auto shentsize = r.at<uint16_t>(0x3a), shnum = r.at<uint16_t>(0x3c),
             shstrndx = r.at<uint16_t>(0x3e);
  if (!shoff || !shentsize || !shnum || !shstrndx || *shentsize < 64 || *shstrndx >= *shnum) {
    return bad("bad section header table");
  }
  std::vector<Section> sections(*shnum);
  for (uint16_t i = 0; i < *shnum; ++i) {
    const uint64_t base = *shoff + static_cast<uint64_t>(i) * *shentsize;
    auto name = r.at<uint32_t>(base), type = r.at<uint32_t>(base + 4),
         link = r.at<uint32_t>(base + 40);
    auto offset = r.at<uint64_t>(base + 24), size = r.at<uint64_t>(base + 32);
    if (!name || !type || !link || !offset || !size) return bad("section header past the end");
    sections[i] = {*name, *type, *offset, *size, *link};
    // NOBITS (8) sections occupy no file bytes; all others must lie inside the file.
    if (*type != 8 && (*offset > cubin.size() || cubin.size() - *offset < *size)) {
      return bad(absl::StrCat("section ", i, " lies past the end"));
    }
  }
  const Section& names = sections[*shstrndx];
  auto section_name = [&](const Section& s) {
    return r.cstr(names.offset + s.name, names.offset + names.size).value_or("");
  };

  // The kernel's symbol index in .symtab (SHT_SYMTAB = 2), which .nv.info attributes refer to.
  std::optional<uint32_t> symbol;
  for (const Section& s : sections) {
    if (s.type != 2 || s.link >= sections.size()) continue;
    const Section& strtab = sections[s.link];
    for (uint64_t off = 0; off + 24 <= s.size; off += 24) {
      auto st_name = r.at<uint32_t>(s.offset + off);
      if (!st_name) break;
      auto n = r.cstr(strtab.offset + *st_name, strtab.offset + strtab.size);
      if (n && *n == kernel) symbol = static_cast<uint32_t>(off / 24);
    }
  }
  if (!symbol) return absl::NotFoundError(absl::StrCat("cubin: no symbol for kernel ", kernel));

  CubinInfo info;
  bool have_regs = false;
  const std::string shared_name = absl::StrCat(".nv.shared.", kernel);
  for (const Section& s : sections) {
    const std::string_view name = section_name(s);
    if (name == shared_name) info.shared_bytes = static_cast<int>(s.size);
    if (name != ".nv.info") continue;
    // Attributes: u8 format, u8 attribute, then by format nothing / u8 / u16 / u16 size + bytes.
    for (uint64_t p = s.offset, end = s.offset + s.size; p + 2 <= end;) {
      const uint8_t format = static_cast<uint8_t>(cubin[p]),
                    attr = static_cast<uint8_t>(cubin[p + 1]);
      p += 2;
      if (format == kFormatNoValue) continue;
      if (format == kFormatByte || format == kFormatHalf) {
        p += 2;  // the value is stored in 2 bytes either way
        continue;
      }
      if (format != kFormatSized) return bad(absl::StrCat("unknown .nv.info format ", format));
      auto len = r.at<uint16_t>(p);
      if (!len || p + 2 + *len > end) return bad(".nv.info attribute runs past its section");
      if ((attr == kAttrRegCount || attr == kAttrFrameSize) && *len == 8) {
        auto sym = r.at<uint32_t>(p + 2), value = r.at<uint32_t>(p + 6);
        if (sym && value && *sym == *symbol) {
          if (attr == kAttrRegCount) {
            info.registers = static_cast<int>(*value);
            have_regs = true;
          } else {
            info.frame_bytes = static_cast<int>(*value);
          }
        }
      }
      p += 2 + *len;
    }
  }
  if (!have_regs) return absl::NotFoundError(absl::StrCat("cubin: no register count for ", kernel));
  return info;
}

}  // namespace kiln
