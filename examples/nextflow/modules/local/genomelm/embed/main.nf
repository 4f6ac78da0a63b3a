process GENOMELM_EMBED {
    tag "$meta.id"
    label 'process_medium'

    // genomelm is not on Bioconda/BioContainers yet: run where `genomelm` is on PATH (a conda/venv
    // environment with `pip install genomelm`), or set `container` for this process in your config.

    input:
    tuple val(meta), path(fasta)
    path model      // checkpoint directory; [] = the shipped default model, or pass `--model NAME` in ext.args

    output:
    tuple val(meta), path("*.safetensors"), emit: embeddings
    path "versions.yml"                   , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args      = task.ext.args ?: ''
    def prefix    = task.ext.prefix ?: "${meta.id}"
    def model_arg = model ? "--model ${model}" : ''
    """
    genomelm \\
        embed \\
        ${fasta} \\
        --output ${prefix}.safetensors \\
        --threads ${task.cpus} \\
        ${model_arg} \\
        ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        genomelm: \$(genomelm --version)
    END_VERSIONS
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.safetensors

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        genomelm: \$(genomelm --version)
    END_VERSIONS
    """
}
