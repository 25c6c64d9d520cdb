#pragma once
// Keras HDF5 files that cxr's writer cannot make, for the reader's tests
// (test_keras_h5.cpp, test_keras_child.cpp).
#include <hdf5.h>

#include <cstring>
#include <string>
#include <vector>

namespace cxr::testing {

/// Writes a one-layer Keras file ("dense") whose only weight ("kernel")
/// claims `dims` float32 values without storing them (chunked by `chunk`,
/// one edge per dimension, never written: HDF5 reads unwritten chunks as
/// the fill value), as a corrupt or hostile header can.
inline void write_claiming_keras_h5(const std::string& path,
                                    const std::vector<hsize_t>& dims,
                                    const std::vector<hsize_t>& chunk) {
  const hid_t file =
      H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  auto string_attr = [](hid_t obj, const char* name, const char* value) {
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, std::strlen(value));
    const hsize_t one = 1;
    const hid_t space = H5Screate_simple(1, &one, nullptr);
    const hid_t attr =
        H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, type, value);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
  };
  string_attr(file, "layer_names", "dense");
  const hid_t group =
      H5Gcreate2(file, "dense", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  string_attr(group, "weight_names", "kernel");
  const hid_t space =
      H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  const hid_t ds = H5Dcreate2(group, "kernel", H5T_IEEE_F32LE, space,
                              H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Dclose(ds);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Gclose(group);
  H5Fclose(file);
}

}  // namespace cxr::testing
