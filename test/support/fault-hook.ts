/**
 * Preloaded (`--import`) into a real gateway process by the fault tests: SIGUSR2 makes the process
 * throw from a timer callback, exactly like a bug in some callback would. Never loaded in production.
 */
process.on('SIGUSR2', () => {
  setTimeout(() => {
    throw new Error('injected fault (test)');
  }, 0);
});
