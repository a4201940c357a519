// The Facsimile class over the engine (placeholder until the package lands).
function createFacsimile(wasm) {
  return class Facsimile {
    constructor(hostname) {
      this._engine = new wasm.Engine(String(hostname), 1, true);
    }
  };
}
