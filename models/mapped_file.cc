// mmap-backed MappedFile.
#include "models/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kiln {

namespace {

// Opens `path` for reading and checks it is a regular file. O_NONBLOCK: opening a FIFO for
// reading would otherwise wait for a writer forever; it has no effect on regular files. The
// check is on the opened descriptor, so the file cannot be swapped between check and read.
absl::StatusOr<int> open_regular(const std::string& path, struct stat* st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": not a regular file (a device, FIFO or directory cannot be a model "
                     "file)"));
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  struct stat st {};
  absl::StatusOr<int> opened = open_regular(path, &st);
  if (!opened.ok()) return opened.status();
  const int fd = *opened;
  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
    }
    file->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
}

absl::StatusOr<std::string> read_small_file(const std::string& path, uint64_t max_bytes) {
  struct stat st {};
  absl::StatusOr<int> opened = open_regular(path, &st);
  if (!opened.ok()) return opened.status();
  const int fd = *opened;
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.st_size,
                                                   " bytes is more than the ", max_bytes,
                                                   " bytes such a file may have"));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  // Read at most the size fstat reported: a file growing meanwhile cannot make this unbounded.
  while (done < out.size()) {
    ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": read failed: ", std::strerror(err)));
    }
    if (n == 0) break;  // truncated while reading: keep what is there
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

}  // namespace kiln
