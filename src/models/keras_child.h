#pragma once
// Internal to src/models: the reader process that parses a Keras HDF5 file
// and the record protocol it answers in. libhdf5 1.10 crashes, overflows its
// heap and loops on some corrupt files (docs/reliability.md), so cxr never
// runs it in its own process: read_in_child starts the program
// cxr-keras-reader (apps/cxr-keras-reader, built with cxr), which streams
// records to its stdout, a pipe; the parent checks them. Not installed;
// include/cxr/models/keras_h5.h is the public interface.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cxr::models::detail {

// Bound on the values of one dataset, checked by the child before it
// allocates and by the parent before it trusts a record: far above any model
// cxr builds (the largest ResNet50V2 weight holds 2.4 M values), far below
// what would exhaust memory.
inline constexpr int64_t kMaxDatasetValues = int64_t{1} << 26;

// A dataset read as float32, row-major. Torch-free: the reader program links
// only libhdf5 and this code.
struct RawWeight {
  std::string name;  // as in `weight_names`, e.g. "Conv1/kernel:0"
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// What the reader sends its parent: records of a tag byte and fields (u32
// lengths and counts, u64 dimensions, float32 values, all native byte
// order: both ends are built together for the same machine).
//   'N' name            a layer name (read_keras_layer_names)
//   'L' name            a layer with weights starts (read_keras_h5)
//   'W' name rank dims values   one weight of that layer
//   'E' message         the reader's ModelError (a message naming the file)
//   'X' message         another exception
//   'D'                 done: everything was sent
enum class Tag : char {
  kName = 'N',
  kLayer = 'L',
  kWeight = 'W',
  kError = 'E',
  kOther = 'X',
  kDone = 'D',
};

// The reader's output: write(2) only, retried on EINTR. A failed write means
// the parent is gone (or killed the reader); the reader just ends.
class PipeWriter {
 public:
  explicit PipeWriter(int fd) : fd_(fd) {}
  void bytes(const void* data, size_t n);
  void tag(Tag t) { bytes(&t, 1); }
  void u32(uint32_t v) { bytes(&v, 4); }
  void text(const std::string& s);
  // A 'W' record.
  void weight(const RawWeight& w);

 private:
  int fd_;
};

// The parent's view of a finished child's records: every length is checked
// against what is left, and anything that does not fit the protocol is one
// ModelError naming the file ("the HDF5 reader process sent malformed data").
class Records {
 public:
  Records(std::string path, std::string data)
      : path_(std::move(path)), data_(std::move(data)) {}
  // The next record's tag; false after the closing 'D'. An 'E' or 'X' record
  // throws the reader's own error.
  bool next(Tag* t);
  std::string text();
  uint32_t u32();
  // The fields of a 'W' record after its tag; its values fill its shape.
  RawWeight weight();
  [[noreturn]] void malformed() const;

 private:
  void bytes(void* out, size_t n);

  std::string path_;
  std::string data_;
  size_t pos_ = 0;
};

// The reader program's file name.
inline constexpr char kReaderName[] = "cxr-keras-reader";

// CPU seconds after which the reader program ends itself (RLIMIT_CPU), so
// that one whose cxr was killed does not loop on a corrupt file for good.
inline constexpr unsigned kReaderCpuSeconds = 120;

// Runs the reader program (`$CXR_KERAS_READER`, else cxr-keras-reader beside
// the running program, else the one this build made) in `mode` ("names":
// 'N' records; "weights": 'L' and 'W' records) on `path`, and returns its
// records, or throws the ModelError that says why there are none: the reader
// is missing, crashed, took longer than `timeout_s`, or sent more than
// 64 MiB plus 8 times the file's size.
Records read_in_child(const std::string& path,
                      const char* mode,
                      double timeout_s);

// The reader program's main (apps/cxr-keras-reader): `cxr-keras-reader
// names|weights FILE` streams FILE's records to stdout and ends with 'D', or
// with the 'E'/'X' record of its error; exit status 0 either way, 2 for a
// wrong command line.
int reader_main(int argc, char** argv);

}  // namespace cxr::models::detail
