"""The world a rank runs in and the context a distributed invariant receives; shared by ZeRO-3 and FSDP."""
