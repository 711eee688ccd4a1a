# bert_book's REST service on the CPU (chapter 14c):
#   docker build -t bert-book .
#   docker run -p 8000:8000 -v $PWD/my-tagger:/model:ro -e BERT_BOOK_API_KEY="$(cat key.txt)" bert-book
# It listens on every interface inside the container: set BERT_BOOK_API_KEY (never bake it into the image), and every
# route but the probes (/health: liveness, /ready: readiness) needs "Authorization: Bearer <key>". /metrics is
# Prometheus' text format. Add --workers N (each worker gets its share of the CPUs) and --log-format json as needed.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# the CPU wheel of the pinned torch (PyTorch's index: 2.x.y+cpu sorts above PyPI's CUDA 2.x.y), then the serve extra
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt ".[serve]" \
 && useradd --create-home bert
USER bert
EXPOSE 8000
CMD ["bert-book", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
