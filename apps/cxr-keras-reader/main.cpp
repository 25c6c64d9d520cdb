// cxr-keras-reader: parses a Keras .h5 weights file with libhdf5 for cxr, in
// a process of its own (libhdf5 1.10 crashes on some corrupt files; a crash
// here is a one-line error in cxr, not a crash of cxr). cxr starts it with
// posix_spawn and reads its records from a pipe (src/models/keras_child.h,
// docs/reliability.md); it links libhdf5 and the reader code, no torch.
#include "../../src/models/keras_child.h"

int main(int argc, char** argv) {
  return cxr::models::detail::reader_main(argc, argv);
}
