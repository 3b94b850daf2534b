int nmb_isolate_ingress(int ifindex, int *link_fd_out);
