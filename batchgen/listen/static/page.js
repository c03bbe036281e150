(function () {
  "use strict";
  var main = document.getElementById("tracks");
  var filter = document.getElementById("filter");
  var sort = document.getElementById("sort");
  var tokenTag = document.querySelector("meta[name=batchgen-token]");
  var token = tokenTag ? tokenTag.content : null;
  var rev = token ? parseInt(document.querySelector("meta[name=batchgen-rev]").content, 10) : 0;
  function tracks() { return Array.prototype.slice.call(main.querySelectorAll("section.track")); }
  function visibleTakes() {
    return Array.prototype.slice.call(main.querySelectorAll("section.track:not(.hidden) figure.take"));
  }
  function figureOf(node) { return node && node.closest ? node.closest("figure.take") : null; }
  function applyFilter() {
    var q = filter.value.trim().toLowerCase();
    tracks().forEach(function (t) {
      var hit = !q || t.dataset.name.indexOf(q) >= 0 || t.dataset.prompt.indexOf(q) >= 0;
      t.classList.toggle("hidden", !hit);
    });
  }
  filter.addEventListener("input", applyFilter);
  sort.addEventListener("change", function () {
    var key = sort.value;
    tracks().sort(function (a, b) {
      if (key === "name") return a.dataset.name.localeCompare(b.dataset.name);
      return parseFloat(b.dataset[key]) - parseFloat(a.dataset[key]);
    }).forEach(function (t) { main.appendChild(t); });
  });
  document.addEventListener("play", function (ev) {
    document.querySelectorAll("audio").forEach(function (a) { if (a !== ev.target) a.pause(); });
  }, true);
  main.addEventListener("click", function (ev) {
    var fig = figureOf(ev.target);
    if (!fig) return;
    var audio = fig.querySelector("audio");
    var wave = ev.target.closest(".wave");
    if (wave && audio && audio.duration) {
      var box = wave.getBoundingClientRect();
      audio.currentTime = Math.max(0, (ev.clientX - box.left) / box.width * audio.duration);
      audio.play();
    }
    if (ev.target.closest("button.wrap") && audio) {
      fig.querySelector("input.loop").checked = audio.loop = true;
      var seek = function () { audio.currentTime = Math.max(0, audio.duration - 2); audio.play(); };
      if (audio.readyState >= 1) seek(); else { audio.addEventListener("loadedmetadata", seek, {once: true}); audio.load(); }
    }
    var act = ev.target.closest("button[data-act]");
    if (act) send(fig, act.dataset.act);
  });
  main.addEventListener("change", function (ev) {
    var fig = figureOf(ev.target);
    if (!fig) return;
    if (ev.target.classList.contains("loop")) fig.querySelector("audio").loop = ev.target.checked;
    if (ev.target.classList.contains("note")) send(fig, "note", ev.target.value);
  });
  function move(fig, step, byTrack) {
    var all = visibleTakes();
    if (!all.length) return;
    var at = all.indexOf(fig);
    var next;
    if (at < 0) next = all[0];
    else if (!byTrack) next = all[Math.max(0, Math.min(all.length - 1, at + step))];
    else {
      var list = tracks().filter(function (t) { return !t.classList.contains("hidden"); });
      var track = fig.closest("section.track");
      var column = Array.prototype.indexOf.call(track.querySelectorAll("figure.take"), fig);
      var other = list[list.indexOf(track) + step];
      if (!other) return;
      var takes = other.querySelectorAll("figure.take");
      next = takes[Math.min(column, takes.length - 1)];
    }
    if (next) { next.focus(); next.scrollIntoView({block: "nearest"}); }
  }
  document.addEventListener("keydown", function (ev) {
    var tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var fig = figureOf(document.activeElement);
    if (ev.key === "/") { ev.preventDefault(); filter.focus(); return; }
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      ev.preventDefault(); move(fig, ev.key === "ArrowRight" ? 1 : -1, false); return;
    }
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault(); move(fig, ev.key === "ArrowDown" ? 1 : -1, !!fig); return;
    }
    if (!fig) return;
    var audio = fig.querySelector("audio");
    if (ev.key === " " && audio) { ev.preventDefault(); if (audio.paused) audio.play(); else audio.pause(); }
    if (token && fig.querySelector("audio") && (ev.key === "p" || ev.key === "x")) {
      ev.preventDefault();
      send(fig, ev.key === "p" ? "pick" : "reject");
    }
  });
  if (!token) return;
  function showMarks(marks) {
    Object.keys(marks).forEach(function (name) {
      var fig = main.querySelector('figure.take[data-take="' + CSS.escape(name) + '"]');
      if (!fig) return;
      var mark = marks[name];
      fig.classList.toggle("picked", mark.state === "picked");
      fig.classList.toggle("rejected", mark.state === "rejected");
      var note = fig.querySelector("textarea.note");
      if (note && document.activeElement !== note) note.value = mark.note;
    });
  }
  function send(fig, action, note) {
    if (fig.classList.contains("picked") && action === "pick") action = "clear";
    else if (fig.classList.contains("rejected") && action === "reject") action = "clear";
    return fetch("api/mark", {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-Batchgen-Token": token},
      body: JSON.stringify({take: fig.dataset.take, action: action, note: note === undefined ? null : note})
    }).then(function (r) { return r.json(); }).then(function (answer) {
      if (answer.marks) showMarks(answer.marks);
      if (answer.error) document.getElementById("summary").textContent = answer.error;
    });
  }
  function update(state) {
    Object.keys(state.takes).forEach(function (name) {
      var old = main.querySelector('figure.take[data-take="' + CSS.escape(name) + '"]');
      if (!old) return;
      var focused = document.activeElement === old;
      var holder = document.createElement("div");
      holder.innerHTML = state.takes[name];
      var fresh = holder.firstElementChild;
      old.replaceWith(fresh);
      if (focused) fresh.focus();
    });
    if (state.summary !== undefined) {
      document.getElementById("summary").textContent = state.summary;
      var problems = document.getElementById("problems");
      var holder = document.createElement("div");
      holder.innerHTML = state.problems;
      if (problems) problems.remove();
      if (holder.firstElementChild) main.insertBefore(holder.firstElementChild, main.firstChild);
    }
    showMarks(state.marks);
    rev = state.rev;
  }
  function poll() {
    fetch("api/state?since=" + rev, {cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (state) { if (state) update(state); })
      .catch(function () {})
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
