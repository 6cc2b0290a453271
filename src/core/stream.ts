import { holdProcess } from "./keep-alive.js";

/**
 * A push-fed async iterator: the producer pushes values, the consumer iterates. Ending the
 * iteration early (`break`, `return()`) runs `onClose` once, which detaches the producer.
 * Values are buffered without bound, so a consumer that stops reading should `return()`.
 * @internal
 */
export class EventStream<T> implements AsyncIterableIterator<T> {
  readonly #buffer: T[] = [];
  readonly #pending: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  #done = false;
  #error: unknown = undefined;
  #onClose: (() => void) | null;

  constructor(onClose: () => void) {
    this.#onClose = onClose;
  }

  push(value: T): void {
    if (this.#done) return;
    const waiter = this.#pending.shift();
    if (waiter) waiter.resolve({ value, done: false });
    else this.#buffer.push(value);
  }

  /** Ends the stream after the buffered values; with `error`, the next read rejects. */
  end(error?: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    this.#close();
    if (this.#buffer.length > 0) return;
    for (const waiter of this.#pending.splice(0)) {
      if (error === undefined) waiter.resolve({ value: undefined, done: true });
      else waiter.reject(error);
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#buffer.length > 0) return Promise.resolve({ value: this.#buffer.shift() as T, done: false });
    if (this.#done) {
      const error = this.#error;
      this.#error = undefined;
      return error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(error);
    }
    // A consumer blocked on the next event keeps the process alive until it comes.
    const release = holdProcess();
    return new Promise<IteratorResult<T>>((resolve, reject) => this.#pending.push({ resolve, reject })).finally(
      release,
    );
  }

  return(): Promise<IteratorResult<T>> {
    this.#buffer.length = 0;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  #close(): void {
    const onClose = this.#onClose;
    this.#onClose = null;
    onClose?.();
  }
}
