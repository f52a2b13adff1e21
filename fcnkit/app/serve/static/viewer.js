// fcnkit viewer: plain JavaScript, no build step. Three stacked canvases (image tiles, mask
// overlay, swipe line) plus a DOM box for the receptive field. Tiles come from /api/tile at zoom
// level z (2^z image pixels per tile pixel); label tiles are raw class indices, coloured here so
// class toggles and the error map need no round trip.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const V = {
    runs: [], images: [], tile: 256, image: null, levels: 1, predictions: [],
    scale: 1, ox: 0, oy: 0, hidden: new Set(), mode: "a", swipe: 0.5, errors: false, errClass: -1,
    tiles: new Map(), colours: new Map(), version: 0, probeSeq: 0, drag: null, pending: 0,
  };

  // names come from files and checkpoints the user did not necessarily write: text, never markup
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

  function showError(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }
  function status(msg) { $("status").textContent = msg; }

  async function api(url, options) {
    const r = await fetch(url, options);
    const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }

  const runOf = (which) => V.runs[which === "b" && V.runs.length > 1 ? 1 : 0];

  // ---- tiles --------------------------------------------------------------------------------
  function tileUrl(layer, run, z, ty, tx) {
    return `/api/tile/${layer}/${z}/${ty}/${tx}?image=${V.image.id}` + (run ? `&run=${run.id}` : "");
  }

  function getTile(layer, run, z, ty, tx) {
    const key = `${layer}|${run ? run.id : ""}|${V.image.id}|${z}|${ty}|${tx}`;
    let t = V.tiles.get(key);
    if (t) return t;
    t = { key, state: "loading" };
    V.tiles.set(key, t);
    V.pending++;
    fetch(tileUrl(layer, run, z, ty, tx)).then(async (r) => {
      if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || `HTTP ${r.status}`);
      if (layer === "image") {
        t.bitmap = await createImageBitmap(await r.blob());
      } else {
        t.w = +r.headers.get("X-Tile-Width");
        t.h = +r.headers.get("X-Tile-Height");
        t.labels = new Uint8Array(await r.arrayBuffer());
      }
      t.state = "ok";
    }).catch((e) => { t.state = "error"; showError(e.message); })
      .finally(() => { V.pending--; schedule(); });
    return t;
  }

  // palette colour of a class; hidden classes and ignore (255) are transparent
  function colourTile(labels, truth, run) {
    const key = `${labels.key}|${truth ? truth.key : ""}|${V.version}`;
    let c = V.colours.get(key);
    if (c) return c;
    const w = labels.w, h = labels.h, img = new ImageData(w, h), d = img.data, lab = labels.labels;
    const pal = run.palette;
    for (let i = 0; i < w * h; i++) {
      let r = 0, g = 0, b = 0, a = 0;
      if (truth) {  // error map: wrong = red; for one class, FP = magenta, FN = cyan
        const p = lab[i], t = truth.labels[i];
        if (t !== 255 && p !== t) {
          if (V.errClass < 0) { r = 255; a = 255; }
          else if (p === V.errClass) { r = 255; b = 255; a = 255; }
          else if (t === V.errClass) { g = 255; b = 255; a = 255; }
        }
      } else {
        const k = lab[i];
        if (k < pal.length && !V.hidden.has(k)) { [r, g, b] = pal[k]; a = 255; }
      }
      d[4 * i] = r; d[4 * i + 1] = g; d[4 * i + 2] = b; d[4 * i + 3] = a;
    }
    c = document.createElement("canvas");
    c.width = w; c.height = h;
    c.getContext("2d").putImageData(img, 0, 0);
    if (V.colours.size > 600) V.colours.clear();
    V.colours.set(key, c);
    return c;
  }

  // ---- drawing ------------------------------------------------------------------------------
  let frame = 0;
  // A scheduled draw means the canvases are stale until it runs: say so at once, so that
  // nobody (a test, a screenshot script) reads "ready" pixels left over from the last view.
  function schedule() {
    document.body.dataset.state = "loading";
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); });
  }

  function sizeCanvases() {
    const st = $("stage");
    for (const c of st.querySelectorAll("canvas")) {
      if (c.width !== st.clientWidth || c.height !== st.clientHeight) {
        c.width = st.clientWidth; c.height = st.clientHeight;
      }
    }
  }

  function visibleTiles() {
    const W = V.image.width, H = V.image.height, st = $("stage");
    const z = Math.max(0, Math.min(V.levels - 1, Math.floor(Math.log2(1 / V.scale))));
    const span = V.tile * (1 << z);
    const x0 = Math.max(0, Math.floor(-V.ox / V.scale / span));
    const y0 = Math.max(0, Math.floor(-V.oy / V.scale / span));
    const x1 = Math.min(Math.ceil(W / span), Math.ceil((st.clientWidth - V.ox) / V.scale / span));
    const y1 = Math.min(Math.ceil(H / span), Math.ceil((st.clientHeight - V.oy) / V.scale / span));
    const out = [];
    for (let ty = y0; ty < y1; ty++) for (let tx = x0; tx < x1; tx++) {
      const ix = tx * span, iy = ty * span;
      out.push({ z, ty, tx, sx: V.ox + ix * V.scale, sy: V.oy + iy * V.scale,
                 sw: (Math.min(W, ix + span) - ix) * V.scale, sh: (Math.min(H, iy + span) - iy) * V.scale });
    }
    return out;
  }

  function draw() {
    sizeCanvases();
    const ic = $("image-canvas").getContext("2d"), oc = $("overlay-canvas").getContext("2d");
    const uc = $("ui-canvas").getContext("2d");
    for (const c of [ic, oc, uc]) c.clearRect(0, 0, c.canvas.width, c.canvas.height);
    if (!V.image) { document.body.dataset.state = "empty"; return; }
    const predicted = V.predictions.length > 0;  // the image shows at once; the overlay once predicted
    ic.imageSmoothingEnabled = V.scale < 1;
    oc.imageSmoothingEnabled = false;  // class colours stay exact: no blending between labels
    const swipeX = V.swipe * oc.canvas.width;
    const layers = V.mode === "swipe" ? [["a", 0, swipeX], ["b", swipeX, oc.canvas.width]]
                                      : [[V.mode, 0, oc.canvas.width]];
    let missing = 0;
    for (const t of visibleTiles()) {
      const im = getTile("image", null, t.z, t.ty, t.tx);
      if (im.state === "ok") ic.drawImage(im.bitmap, t.sx, t.sy, t.sw, t.sh); else missing++;
      for (const [which, left, right] of predicted ? layers : []) {
        const run = runOf(which);
        const lab = getTile("labels", run, t.z, t.ty, t.tx);
        const truth = V.errors ? getTile("truth", null, t.z, t.ty, t.tx) : null;
        if (lab.state !== "ok" || (truth && truth.state !== "ok")) { missing++; continue; }
        oc.save();
        oc.beginPath(); oc.rect(left, 0, right - left, oc.canvas.height); oc.clip();
        oc.drawImage(colourTile(lab, truth, run), t.sx, t.sy, t.sw, t.sh);
        oc.restore();
      }
    }
    if (V.mode === "swipe") {
      uc.strokeStyle = "#fff"; uc.lineWidth = 2;
      uc.beginPath(); uc.moveTo(swipeX, 0); uc.lineTo(swipeX, uc.canvas.height); uc.stroke();
    }
    const ready = predicted && missing === 0 && V.pending === 0;
    document.body.dataset.state = ready ? "ready" : "loading";
    if (ready) status(`${V.image.name}: ${V.image.width}x${V.image.height}, zoom ${V.scale.toFixed(3)}`);
  }

  // ---- view geometry ------------------------------------------------------------------------
  function fit() {
    const st = $("stage");
    V.scale = Math.min(st.clientWidth / V.image.width, st.clientHeight / V.image.height) * 0.95;
    V.ox = (st.clientWidth - V.image.width * V.scale) / 2;
    V.oy = (st.clientHeight - V.image.height * V.scale) / 2;
    $("rf-box").hidden = true;
    schedule();
  }
  // screen position (stage pixels) of the centre of image pixel (x, y), and back
  const imageToScreen = (x, y) => [V.ox + (x + 0.5) * V.scale, V.oy + (y + 0.5) * V.scale];
  const screenToImage = (sx, sy) => [Math.floor((sx - V.ox) / V.scale), Math.floor((sy - V.oy) / V.scale)];

  // ---- probe: probabilities + receptive field of the output cell under the cursor -----------
  async function probe(sx, sy) {
    const [x, y] = screenToImage(sx, sy);
    const inside = V.image && x >= 0 && y >= 0 && x < V.image.width && y < V.image.height;
    if (!inside || !V.predictions.length) { $("rf-box").hidden = true; return; }
    const which = V.mode === "swipe" ? (sx < V.swipe * $("stage").clientWidth ? "a" : "b") : V.mode;
    const run = runOf(which), seq = ++V.probeSeq;
    let p;
    try { p = await api(`/api/probe?image=${V.image.id}&run=${run.id}&x=${x}&y=${y}`); }
    catch (e) { showError(e.message); return; }
    if (seq !== V.probeSeq) return;  // a newer probe is on its way
    drawReceptiveField(p.rf);
    const rows = (p.probabilities || []).map((v, k) => [v, k]).sort((a, b) => b[0] - a[0]).slice(0, 5);
    const gridStride = p.rf.stride[1] > 1 ? p.rf.stride : p.rf.align;
    $("probe").innerHTML =
      `<div>run <b>${esc(run.name)}</b>, pixel (${x}, ${y}): <b id="probe-class">${esc(p.class)}</b></div>` +
      `<div>output cell (${p.cell[0]}, ${p.cell[1]}); receptive field ${p.rf.size[0]}x${p.rf.size[1]}, ` +
      `stride ${p.rf.stride[0]}, grid ${gridStride[0]}` +
      `${p.rf.stride[1] > 1 ? "" : " (internal stride: the output is dense)"}</div>` +
      (p.probabilities ? "<table>" + rows.map(([v, k]) => "<tr><td><span class=\"swatch\" " +
        `style="background:rgb(${run.palette[k]})"></span>${esc(run.classes[k])}</td>` +
        `<td>${(100 * v).toFixed(1)}%</td><td><span class="bar" style="width:${80 * v}px">` +
        "</span></td></tr>").join("") + "</table>" : "<div>(probabilities not kept for an image this large)</div>");
  }

  function drawReceptiveField(rf) {
    const box = $("rf-box"), s = V.scale;
    const w = (rf.right - rf.left + 1) * s, h = (rf.bottom - rf.top + 1) * s;
    box.style.left = `${V.ox + rf.left * s}px`; box.style.top = `${V.oy + rf.top * s}px`;
    box.style.width = `${w}px`; box.style.height = `${h}px`;
    box.dataset.size = `${rf.size[0]}x${rf.size[1]}`;
    // the effective stride grid: lines through the centres of the neighbouring output cells
    const g = (rf.stride[1] > 1 ? rf.stride : rf.align).map((v) => v * s);
    if (g[0] >= 3 && g[1] >= 3) {
      const px = ((rf.centre[1] + 0.5 - rf.left) * s) % g[1], py = ((rf.centre[0] + 0.5 - rf.top) * s) % g[0];
      box.style.backgroundImage = "linear-gradient(to right, rgba(255,255,0,.55) 1px, transparent 1px)," +
                                  "linear-gradient(to bottom, rgba(255,255,0,.55) 1px, transparent 1px)";
      box.style.backgroundSize = `${g[1]}px ${g[0]}px`;
      box.style.backgroundPosition = `${px}px ${py}px`;
    } else {
      box.style.backgroundImage = "none";
    }
    box.hidden = false;
  }

  // ---- panels -------------------------------------------------------------------------------
  function renderLegend() {
    const run = runOf(V.mode === "b" ? "b" : "a"), scores = (V.predictions.find((p) => p.run === run.id) || {}).scores;
    $("legend").innerHTML = run.classes.map((name, k) =>
      `<label><input type="checkbox" data-class="${k}" ${V.hidden.has(k) ? "" : "checked"}>` +
      `<span class="swatch" style="background:rgb(${run.palette[k]})"></span>${esc(name)}` +
      (scores && scores.iu[k] !== null ? ` <small>IU ${scores.iu[k].toFixed(3)}</small>` : "") +
      "</label><br>").join("");
    const sel = $("error-class");
    sel.innerHTML = '<option value="-1">all classes (red)</option>' + run.classes.map((n, k) =>
      `<option value="${k}">${esc(n)}: FP magenta, FN cyan</option>`).join("");
    sel.value = String(V.errClass);
  }

  function renderScores() {
    const lines = V.predictions.map((p) => {
      const run = V.runs.find((r) => r.id === p.run);
      const s = p.scores;
      const time = `${p.seconds.toFixed(2)} s${p.cached ? " (cached)" : ""}, ` +
                   `${p.tiles} tile${p.tiles === 1 ? "" : "s"}`;
      const iu = s && s.mean_iu !== null ? s.mean_iu.toFixed(3) : "n/a";
      return `<div><b>${esc(run.name)}</b>: ` +
        (s ? `<span class="iu">mean IU ${iu}</span>, pixel acc. ${s.pixel_accuracy.toFixed(3)}; ` : "") +
        `predicted in ${time} <a href="${p.mask_url}">mask</a></div>`;
    });
    $("scores").innerHTML = lines.join("") || "no mask given";
    $("errors-label").hidden = !V.image.has_mask;
  }

  async function show(result) {
    const same = V.image && V.image.id === result.image.id;  // already on screen: keep its tiles and view
    V.image = result.image; V.levels = result.image.levels; V.predictions = result.predictions;
    if (!same) { V.tiles.clear(); V.colours.clear(); }
    V.errors = V.errors && V.image.has_mask; $("errors").checked = V.errors;
    const i = V.images.findIndex((im) => im.id === V.image.id);
    if (i < 0) { V.images.push(V.image); fillImages(); } else V.images[i] = V.image;
    $("image-select").value = V.image.id;
    renderLegend(); renderScores();
    if (same) schedule(); else fit();
    // scores need the whole mask: fetched after the overlay, so they never delay it
    for (const p of V.predictions.filter((q) => q.scores_url)) {
      api(p.scores_url).then((s) => {
        if (!V.predictions.includes(p)) return;  // another image was picked meanwhile
        p.scores = s; renderLegend(); renderScores();
      }).catch((e) => showError(e.message));
    }
  }

  // tiles done of the prediction under way, shown while the image is already on screen
  async function pollProgress(id) {
    const parts = await Promise.all(V.runs.map((r) => api(`/api/progress?image=${id}&run=${r.id}`)
      .then((p) => `${r.name}: ${p.state === "running" ? `tile ${p.done}/${p.total}` : p.state}`).catch(() => "")));
    if (V.image && V.image.id === id && !V.predictions.length) status(`predicting (${parts.join(", ")})...`);
  }

  async function selectImage(id) {
    showError(""); document.body.dataset.state = "loading";
    const known = V.images.find((i) => i.id === id);
    if (known) {  // draw the image while the server predicts it
      V.image = known; V.levels = known.levels; V.predictions = []; V.tiles.clear(); V.colours.clear();
      $("rf-box").hidden = true; fit();
    }
    status("predicting...");
    const timer = setInterval(() => pollProgress(id), 500);
    try { await show(await api(`/api/predict?image=${encodeURIComponent(id)}`)); }
    catch (e) { showError(e.message); status(""); }
    finally { clearInterval(timer); }
  }

  function fillImages() {
    $("image-select").innerHTML = V.images.map((i) =>
      `<option value="${esc(i.id)}">${esc(i.name)} (${i.width}x${i.height})</option>`).join("");
  }

  // ---- events -------------------------------------------------------------------------------
  function wire() {
    const st = $("stage");
    $("image-select").onchange = (e) => selectImage(e.target.value);
    $("opacity").oninput = (e) => { $("overlay-canvas").style.opacity = e.target.value; };
    $("fit").onclick = () => V.image && fit();
    $("compare").onchange = (e) => { V.mode = e.target.value; renderLegend(); schedule(); };
    $("errors").onchange = (e) => { V.errors = e.target.checked; V.version++; schedule(); };
    $("error-class").onchange = (e) => { V.errClass = +e.target.value; V.version++; schedule(); };
    $("legend").onchange = (e) => {
      const k = +e.target.dataset.class;
      if (e.target.checked) V.hidden.delete(k); else V.hidden.add(k);
      V.version++; schedule();
    };
    $("upload-form").onsubmit = async (e) => {
      e.preventDefault();
      const file = $("upload-image").files[0];
      if (!file) { showError("choose an image file first"); return; }
      const form = new FormData();
      form.append("image", file);
      if ($("upload-mask").files[0]) form.append("mask", $("upload-mask").files[0]);
      showError(""); status(`uploading ${file.name}...`); document.body.dataset.state = "loading";
      try { await show(await api("/api/predict", { method: "POST", body: form })); }
      catch (err) { showError(err.message); status(""); document.body.dataset.state = "error"; }
    };
    st.addEventListener("wheel", (e) => {
      if (!V.image) return;
      e.preventDefault();
      const f = Math.exp(-e.deltaY * 0.0015), r = st.getBoundingClientRect();
      const mx = e.clientX - r.left, my = e.clientY - r.top;
      V.ox = mx - (mx - V.ox) * f; V.oy = my - (my - V.oy) * f; V.scale *= f;
      $("rf-box").hidden = true; schedule();
    }, { passive: false });
    st.addEventListener("mousedown", (e) => {
      const r = st.getBoundingClientRect(), mx = e.clientX - r.left;
      const onSwipe = V.mode === "swipe" && Math.abs(mx - V.swipe * st.clientWidth) < 8;
      V.drag = { x: e.clientX, y: e.clientY, ox: V.ox, oy: V.oy, swipe: onSwipe };
    });
    window.addEventListener("mouseup", () => { V.drag = null; });
    st.addEventListener("mousemove", (e) => {
      const r = st.getBoundingClientRect();
      if (V.drag && V.drag.swipe) {  // move the swipe line
        V.swipe = Math.min(1, Math.max(0, (e.clientX - r.left) / st.clientWidth)); schedule(); return;
      }
      if (V.drag) {  // pan
        V.ox = V.drag.ox + e.clientX - V.drag.x; V.oy = V.drag.oy + e.clientY - V.drag.y; schedule(); return;
      }
      probe(e.clientX - r.left, e.clientY - r.top);
    });
    st.addEventListener("mouseleave", () => { $("rf-box").hidden = true; });
    window.addEventListener("resize", schedule);
  }

  async function init() {
    wire();
    try {
      const info = await api("/api/runs");
      V.runs = info.runs; V.images = info.images; V.tile = info.tile_size;
      $("runs").innerHTML = V.runs.map((r) => `<div><b>${esc(r.name)}</b> (${esc(r.model)}): receptive field ` +
        `${r.geometry.size.join("x")}, stride ${r.geometry.stride.join("x")}</div>`).join("");
      $("compare-label").hidden = V.runs.length < 2;
      V.runs.forEach((r, i) => { $("compare").options[i].text = r.name; });
      fillImages();
      if (V.images.length) await selectImage(V.images[0].id);
      else { status("upload an image to start"); document.body.dataset.state = "empty"; }
    } catch (e) { showError(e.message); }
  }

  window.fcnkitViewer = { state: V, imageToScreen, screenToImage, fit, selectImage };
  init();
})();
