// Storage lifetime: owned bytes go back to their allocator, borrowed bytes to the user's deleter.
#include "tensor/storage.h"

#include "tensor/object_pool.h"

namespace kiln {

Storage::Storage(size_t nbytes, Device device)
    : nbytes_(nbytes), allocator_(&allocator_for(device)), device_(device) {
  data_ = allocator_->allocate(nbytes);
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data), nbytes_(nbytes), device_(device) {
  if (deleter) deleter_ = std::make_unique<std::function<void(void*)>>(std::move(deleter));
}

void* Storage::operator new(size_t bytes) { return detail::ObjectPool<Storage>::allocate(bytes); }
void Storage::operator delete(void* p, size_t bytes) { detail::ObjectPool<Storage>::release(p, bytes); }

Storage::~Storage() {
  if (allocator_) allocator_->deallocate(data_, nbytes_);
  else if (deleter_) (*deleter_)(data_);
}

}  // namespace kiln
