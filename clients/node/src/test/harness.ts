/** A real Redis and a real sidecar, from the repository's `tests/sdk_harness.py`. */

import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface, type Interface } from "node:readline";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

export interface HarnessInfo {
  socket: string;
  redis_socket: string;
  rules: Array<{ name: string; limit: number; window_ms: number }>;
}

export class Harness {
  private lines: string[] = [];
  private waiters: Array<(line: string | null) => void> = [];
  private closed = false;

  private constructor(
    private readonly proc: ChildProcessWithoutNullStreams,
    private readonly rl: Interface,
    public info: HarnessInfo,
  ) {}

  get socket(): string {
    return this.info.socket;
  }

  static async start(): Promise<Harness> {
    const python = process.env["MADSIDECAR_PYTHON"] ?? `${REPO_ROOT}.venv/bin/python`;
    if (!existsSync(python)) {
      throw new Error(
        `no Python for the test harness at ${python}: run ./dev test from the repository root ` +
          "(it makes the .venv), or set MADSIDECAR_PYTHON",
      );
    }
    const proc = spawn(python, ["-m", "tests.sdk_harness"], {
      cwd: REPO_ROOT,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const rl = createInterface({ input: proc.stdout });
    const h = new Harness(proc, rl, { socket: "", redis_socket: "", rules: [] });
    rl.on("line", (line) => {
      const w = h.waiters.shift();
      if (w) w(line);
      else h.lines.push(line);
    });
    rl.on("close", () => {
      h.closed = true;
      for (const w of h.waiters.splice(0)) w(null);
    });
    const first = await h.readLine(60_000);
    if (first === null) throw new Error(`the harness exited before it was ready:\n${stderr}`);
    h.info = JSON.parse(first) as HarnessInfo;
    return h;
  }

  private readLine(timeoutMs: number): Promise<string | null> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the harness did not answer")), timeoutMs);
      this.waiters.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  }

  /** `flush`, `restart`, `stop` or `start`; resolves once the harness says `ok`. */
  async command(cmd: "flush" | "restart" | "stop" | "start"): Promise<void> {
    this.proc.stdin.write(cmd + "\n");
    const answer = await this.readLine(60_000);
    if (answer !== "ok") throw new Error(`harness ${cmd}: ${answer}`);
  }

  async stop(): Promise<void> {
    this.proc.stdin.end();
    if (this.proc.exitCode === null) {
      await new Promise<void>((resolve) => this.proc.once("exit", () => resolve()));
    }
    this.rl.close();
  }
}
