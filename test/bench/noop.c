/* The cheapest program there is: a static binary that exits at once. What
 * the kernel and libc charge for running it is the floor under any CNI
 * plugin's exec on this machine (ambient-bench plugin-exec). */
int main(void) { return 0; }
